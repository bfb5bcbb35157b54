// The E2B SDK side of ztee-bench-serve (bench_serve.cpp runs it with
// E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set to its `ztee serve`).
// Reads one command per line on stdin, answers one line on stdout:
//   cycle                      -> "cycle <ms>": Sandbox.create, commands.run('true'), kill
//   load <clients> <sandboxes> <seconds>
//                              -> "started" once the sandboxes exist, then
//                                 "load <errors> <seconds> <ms>,<ms>,...":
//                                 <clients> loops of commands.run('echo x') spread
//                                 over <sandboxes> sandboxes
//   quit
// The SDK is tests/serve's pinned npm `e2b` (installed by `tools/dev setup`).
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const require = createRequire(join(here, '..', 'tests', 'serve', 'package.json'))
const { Sandbox } = await import(pathToFileURL(require.resolve('e2b')).href)

const now = () => Number(process.hrtime.bigint()) / 1e6

async function cycle() {
  const t0 = now()
  const sbx = await Sandbox.create({ timeoutMs: 60_000 })
  await sbx.commands.run('true')
  await sbx.kill()
  return now() - t0
}

async function load(clients, sandboxes, seconds) {
  const boxes = []
  for (let i = 0; i < sandboxes; ++i) boxes.push(await Sandbox.create({ timeoutMs: (seconds + 120) * 1000 }))
  for (const b of boxes) await b.commands.run('echo x')  // each sandbox's first command outside the count
  console.log('started')
  const lat = []
  let errors = 0
  const t0 = now(), end = t0 + seconds * 1000
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    const b = boxes[c % boxes.length]
    while (now() < end) {
      const s = now()
      try {
        const r = await b.commands.run('echo x')
        if (r.stdout !== 'x\n') throw new Error(`unexpected output ${JSON.stringify(r.stdout)}`)
        lat.push(now() - s)
      } catch (e) {
        if (++errors <= 3) console.error(`bench_serve.mjs: commands.run failed: ${e}`)
      }
    }
  }))
  const elapsed = (now() - t0) / 1000
  console.log(`load ${errors} ${elapsed.toFixed(3)} ${lat.map(x => x.toFixed(3)).join(',')}`)
  for (const b of boxes) await b.kill()
}

const rl = createInterface({ input: process.stdin })
for await (const line of rl) {
  const [cmd, ...args] = line.trim().split(/\s+/)
  try {
    if (cmd === 'cycle') console.log(`cycle ${(await cycle()).toFixed(3)}`)
    else if (cmd === 'load') await load(Number(args[0]), Number(args[1]), Number(args[2]))
    else if (cmd === 'quit') break
    else console.log(`error unknown command ${cmd}`)
  } catch (e) {
    console.log(`error ${String(e).replace(/\n/g, ' ')}`)
  }
}
rl.close()
