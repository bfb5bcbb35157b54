#!/usr/bin/env bash
# Installs the build to a temporary prefix and builds examples/hello.c and
# examples/hello.cpp (the C++ API, ztee.hpp) out of tree twice, with
# find_package(ztee CONFIG) and with pkg-config, then runs them (each boots a
# microVM and prints 42). Also runs the installed CLI.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1 src=$2
tmp=$(mktemp -d /tmp/ztee-install-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "install_test: FAIL: $*" >&2; fails=$((fails + 1)); }
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; exit 1; }
for f in lib/libztee.so lib/libztee.so.0 include/ztee.h include/ztee.hpp lib/pkgconfig/ztee.pc lib/cmake/ztee/zteeConfig.cmake \
         lib/cmake/ztee/zteeConfigVersion.cmake bin/ztee libexec/ztee/ztee-agent share/ztee/image-build.sh; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
[ "$(readlink "$prefix/lib/libztee.so")" = libztee.so.0 ] || fail "libztee.so does not point at the SONAME link"
soname=$(objdump -p "$prefix/lib/libztee.so.0" | awk '/SONAME/ {print $2}')
[ "$soname" = libztee.so.0 ] || fail "SONAME is '$soname'"

# 1. CMake package.
cmake -S "$src/tests/install/consumer" -B "$tmp/cm" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
      -DZTEE_EXAMPLE="$src/examples/hello.c" -DZTEE_CXX_EXAMPLE="$src/examples/hello.cpp" -DCMAKE_BUILD_RPATH="$prefix/lib" >"$tmp/cm.log" 2>&1 &&
  cmake --build "$tmp/cm" >>"$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; fail "find_package build"; }
if [ -x "$tmp/cm/hello_c" ]; then
  out=$("$tmp/cm/hello_c" 2>&1) || fail "find_package build: hello_c failed: $out"
  [ "$out" = 42 ] || fail "find_package build printed '$out', want 42"
  ldd "$tmp/cm/hello_c" | grep "$prefix/lib/libztee.so.0" >/dev/null || fail "find_package build does not use the installed library"
fi
if [ -x "$tmp/cm/hello_cpp" ]; then
  out=$("$tmp/cm/hello_cpp" 2>&1) || fail "find_package build: hello_cpp failed: $out"
  [ "$out" = 42 ] || fail "find_package build: hello_cpp printed '$out', want 42"
  ldd "$tmp/cm/hello_cpp" | grep "$prefix/lib/libztee.so.0" >/dev/null || fail "find_package C++ build does not use the installed library"
fi

# 2. pkg-config.
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --cflags --libs ztee) || fail "pkg-config --cflags --libs ztee"
[ "$(pkg-config --modversion ztee)" = "$(sed -n 's/^Version: //p' "$prefix/lib/pkgconfig/ztee.pc")" ] || fail "modversion"
# shellcheck disable=SC2086
cc -std=c99 -Wall -Werror "$src/examples/hello.c" -o "$tmp/hello_pc" $flags -Wl,-rpath,"$prefix/lib" 2>"$tmp/pc.log" ||
  { cat "$tmp/pc.log"; fail "pkg-config build"; }
if [ -x "$tmp/hello_pc" ]; then
  out=$("$tmp/hello_pc" 2>&1) || fail "pkg-config build: hello failed: $out"
  [ "$out" = 42 ] || fail "pkg-config build printed '$out', want 42"
fi
# shellcheck disable=SC2086
c++ -std=c++17 -Wall -Wextra -pedantic -Werror "$src/examples/hello.cpp" -o "$tmp/hello_cpp_pc" $flags \
    -Wl,-rpath,"$prefix/lib" 2>"$tmp/pc_cpp.log" || { cat "$tmp/pc_cpp.log"; fail "pkg-config C++ build"; }
if [ -x "$tmp/hello_cpp_pc" ]; then
  out=$("$tmp/hello_cpp_pc" 2>&1) || fail "pkg-config build: hello_cpp failed: $out"
  [ "$out" = 42 ] || fail "pkg-config build: hello_cpp printed '$out', want 42"
fi

# 3. The installed CLI: runs a sandbox with the default image, finds its
# image builder (help only: no rebuild here).
out=$("$prefix/bin/ztee" run -- python3 -c 'print(6*7)' 2>&1) || fail "installed ztee run: $out"
[ "$out" = 42 ] || fail "installed ztee run printed '$out'"
"$prefix/bin/ztee" image build --help >/dev/null 2>&1 || fail "installed ztee image build --help"

# 4. The Node package: npm pack, then npm install of the tarball in another
# folder, offline with an empty cache (node-addon-api is bundled; the addon is
# built by npm's node-gyp against the installed libztee via pkg-config), then
# examples/hello.mjs and examples/e2b_quickstart.mjs from there.
if command -v node >/dev/null && command -v npm >/dev/null && [ -e "$src/bindings/node/node_modules/node-addon-api" ]; then
  npmenv=(env npm_config_cache="$tmp/npm-cache" npm_config_update_notifier=false)
  tgz=$(cd "$src/bindings/node" && "${npmenv[@]}" npm pack --silent --pack-destination "$tmp" 2>"$tmp/pack.log") ||
    { cat "$tmp/pack.log"; fail "npm pack"; }
  mkdir -p "$tmp/app" && echo '{"name": "app", "private": true}' >"$tmp/app/package.json"
  if [ -n "$tgz" ] && (cd "$tmp/app" && "${npmenv[@]}" npm install --offline --no-audit --no-fund "$tmp/$tgz") >"$tmp/npm.log" 2>&1; then
    addon=$tmp/app/node_modules/ztee/build/Release/ztee.node
    ldd "$addon" | grep "$prefix/lib/.*libztee.so.0" >/dev/null || fail "npm install: $addon does not use the installed library"
    cp "$src/examples/hello.mjs" "$tmp/app/"
    out=$(cd "$tmp/app" && node hello.mjs 2>&1) || fail "npm-installed package: hello.mjs failed: $out"
    [ "$out" = 42 ] || fail "npm-installed package: hello.mjs printed '$out', want 42"
    # ztee/e2b from the installed package: the CommonJS entry, then the (ESM) quickstart.
    out=$(cd "$tmp/app" && node -e "process.stdout.write(typeof require('ztee/e2b').Sandbox.create)" 2>&1)
    [ "$out" = function ] || fail "npm-installed package: require('ztee/e2b') gave '$out'"
    cp "$src/examples/e2b_quickstart.mjs" "$tmp/app/"
    out=$(cd "$tmp/app" && node e2b_quickstart.mjs 2>&1) || fail "npm-installed package: e2b_quickstart.mjs failed: $out"
    [ "$out" = "$(printf '42\nHello from the sandbox\nfile hello.txt\nrunning: true\nexit code: 3')" ] ||
      fail "npm-installed package: e2b_quickstart.mjs printed '$out'"
  else
    cat "$tmp/npm.log"
    fail "npm install of the packed ztee package"
  fi
else
  echo "install_test: SKIP node: node, npm or bindings/node/node_modules (tools/dev setup) missing"
fi

if [ "$fails" -ne 0 ]; then
  echo "install_test: $fails check(s) failed"
  exit 1
fi
echo "install_test: installed to a prefix; C and C++ built with find_package and with pkg-config; all ran"
