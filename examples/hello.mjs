// Runs Python code in a microVM that writes a file, reads the file back and
// prints it. Run: node examples/hello.mjs (with the ztee package installed;
// CTest runs it as example_node against the build).
import { Sandbox } from 'ztee';

const sb = await Sandbox.create();  // boots a microVM
try {
  await sb.exec(['python3', '-c', "open('/tmp/answer.txt', 'w').write(str(6 * 7))"]);
  console.log(await sb.files.read('/tmp/answer.txt', { encoding: 'utf8' }));  // 42
} finally {
  await sb.destroy();  // or: await using sb = ... (where the syntax is supported)
}
