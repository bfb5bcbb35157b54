// E2B-style quickstart on libztee: the only change from code written for
// E2B's JS SDK is the import line. Runs in-process, no API key, no network.
// Run: node examples/e2b_quickstart.mjs (with the ztee package installed;
// the Node tests run it against the build).
import { Sandbox } from 'ztee/e2b';  // was: import { Sandbox } from 'e2b'

const sbx = await Sandbox.create();  // a microVM; killed by a timer after 300 s unless killed before

const result = await sbx.commands.run('python3 -c "print(6 * 7)"');
console.log(result.stdout.trim());

await sbx.files.write('/home/user/hello.txt', 'Hello from the sandbox');
console.log(await sbx.files.read('/home/user/hello.txt'));

for (const entry of await sbx.files.list('/home/user')) {
  console.log(entry.type, entry.name);
}

const handle = await sbx.commands.run('sleep 600', { background: true });
const running = await sbx.commands.list();
console.log('running:', running.length === 1 && running[0].pid === handle.pid);
await handle.kill();

try {
  await sbx.commands.run('exit 3');
} catch (e) {  // CommandExitError
  console.log('exit code:', e.exitCode);
}

await sbx.kill();
