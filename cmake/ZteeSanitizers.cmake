# -DZTEE_SANITIZE=ON builds everything with ASan + UBSan (used for the unit and C ABI suites).
option(ZTEE_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
if(ZTEE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# -DZTEE_FUZZ=ON (with clang) instruments everything for libFuzzer; tests/fuzz adds the fuzz binaries.
option(ZTEE_FUZZ "Build libFuzzer targets (needs clang)" OFF)
if(ZTEE_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
