# Builds ztee.node at `npm install` (scripts/build.js runs npm's own node-gyp)
# against an installed libztee, found with pkg-config (PKG_CONFIG_PATH).
{
  "targets": [
    {
      "target_name": "ztee",
      "sources": ["src/ztee_node.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I ztee | sed -e 's/-I//g')"
      ],
      "libraries": [
        "<!@(pkg-config --libs ztee)",
        "-Wl,-rpath,<!(pkg-config --variable=libdir ztee)"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-fvisibility=hidden"]
    }
  ]
}
