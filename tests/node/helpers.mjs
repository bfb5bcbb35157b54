// Shared by the Node binding's tests: a private state dir, and what a
// sandbox leaves on the host (its state dir entry, its cgroups, its VMM).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function tempStateDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `ztee-node-${tag}.`));
}

// Everything on the host that still belongs to sandbox `id`: [] once it is gone.
export function leftovers(stateDir, id) {
  const left = [];
  if (fs.existsSync(path.join(stateDir, id))) left.push(`${stateDir}/${id}`);
  for (const ctl of fs.readdirSync('/sys/fs/cgroup')) {
    for (const p of [`/sys/fs/cgroup/${ctl}/ztee/${id}`, `/sys/fs/cgroup/${ctl}/${id}`]) {
      if (fs.existsSync(p)) left.push(p);
    }
  }
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd;
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;  // exited meanwhile
    }
    if (cmd.includes(id)) left.push(`process ${pid} (${cmd[0]})`);
  }
  return left;
}

// Sandboxes (sb-*) still in a state dir.
export function sandboxDirs(stateDir) {
  return fs.readdirSync(stateDir).filter((d) => d.startsWith('sb-'));
}

export async function waitFor(cond, ms, step = 100) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, step));
  }
}
