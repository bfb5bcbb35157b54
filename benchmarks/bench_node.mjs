// One side of ztee-bench-bindings: run("true") and a 1 MiB read through the
// Node binding. Prints {"lang": "node", ...} like ztee-bench-capi.
// Usage: node benchmarks/bench_node.mjs [CALLS], where `import 'ztee'`
// resolves (bench_bindings.py runs it from build/node/).
import { createRequire } from 'node:module';
import path from 'node:path';

const usage = 'usage: bench_node.mjs [CALLS (1..1000000, default 30)]';
const args = process.argv.slice(2);
if (args[0] === '--help' || args[0] === '-h') {
  console.log(usage);
  process.exit(0);
}
const calls = args.length ? Number(args[0]) : 30;
if (args.length > 1 || !/^[0-9]+$/.test(args[0] ?? '30') || calls < 1 || calls > 1000000) {
  console.error(`error: bad arguments ${JSON.stringify(args)}\n${usage}`);
  process.exit(2);
}

// Resolved from the working directory, so the script may live anywhere.
const require = createRequire(path.join(process.cwd(), 'bench.js'));
const { Sandbox } = require('ztee');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const us = (t0) => Number(process.hrtime.bigint() - t0) / 1000;

const sb = await Sandbox.create();
try {
  await sb.files.write('/tmp/mib', Buffer.alloc(1 << 20, 'x'));
  const runUs = [];
  const readUs = [];
  for (let i = -20; i < calls; i++) {  // 20 warm-up calls
    const t0 = process.hrtime.bigint();
    await sb.exec(['true']);
    const t1 = process.hrtime.bigint();
    const data = await sb.files.read('/tmp/mib');
    const t2 = process.hrtime.bigint();
    if (data.length !== 1 << 20) throw new Error(`read ${data.length} bytes`);
    if (i >= 0) {
      runUs.push(Number(t1 - t0) / 1000);
      readUs.push(Number(t2 - t1) / 1000);
    }
  }
  const pingUs = [];
  for (let i = -50; i < 10 * calls; i++) {
    const t0 = process.hrtime.bigint();
    await sb.ping();
    if (i >= 0) pingUs.push(us(t0));
  }
  const r1 = (x) => Math.round(x * 10) / 10;
  console.log(JSON.stringify({ lang: 'node', run_true_p50_us: r1(median(runUs)),
                               read_1mib_p50_us: r1(median(readUs)), ping_p50_us: r1(median(pingUs)), calls }));
} finally {
  await sb.destroy();
}
