// A typical E2B SDK program, exactly as written for E2B: the test runs it
// with only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY pointing at
// `ztee serve`.
import { Sandbox } from 'e2b'

const sandbox = await Sandbox.create()
try {
  await sandbox.files.write('/tmp/hello.py', 'print(sum(range(10)))\n')
  const result = await sandbox.commands.run('python3 /tmp/hello.py')
  console.log(result.stdout.trim())
} finally {
  await sandbox.kill()
}
