'use strict';
// The package's install step: builds build/Release/ztee.node against an
// installed libztee (found with `pkg-config ztee`; set PKG_CONFIG_PATH to
// <prefix>/lib/pkgconfig for a prefix of your own) with npm's own node-gyp
// and the headers of the node that runs it (--nodedir), so nothing is
// downloaded.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

function fail(msg) {
  console.error(`ztee: ${msg}`);
  process.exit(1);
}

const pc = spawnSync('pkg-config', ['--modversion', 'ztee'], { encoding: 'utf8' });
if (pc.error || pc.status !== 0) {
  fail('libztee not found by pkg-config: install it (cmake --install build --prefix PREFIX) and set ' +
       'PKG_CONFIG_PATH=PREFIX/lib/pkgconfig, then reinstall this package');
}

// Headers of this node: <prefix>/include/node, beside <prefix>/bin/node.
let nodedir = process.env.npm_config_nodedir;
if (!nodedir) {
  nodedir = path.resolve(path.dirname(process.execPath), '..');
  if (!fs.existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) {
    fail(`Node headers not found in ${nodedir}/include/node: install them (the nodejs package's headers) ` +
         'or set npm_config_nodedir');
  }
}

// npm passes its bundled node-gyp in npm_config_node_gyp; else npm's own copy.
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((p) => p && fs.existsSync(p));
if (candidates.length === 0) fail('node-gyp not found (it comes with npm): run this through npm install');

const r = spawnSync(process.execPath, [candidates[0], 'rebuild', `--nodedir=${nodedir}`],
                    { cwd: path.join(__dirname, '..'), stdio: 'inherit' });
process.exit(r.status ?? 1);
