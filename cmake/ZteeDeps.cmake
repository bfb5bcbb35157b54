# Third-party dependencies, all from Debian's packages (tools/dev installs them).
find_package(PkgConfig REQUIRED)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(NLROUTE REQUIRED IMPORTED_TARGET libnl-route-3.0)
find_package(fmt REQUIRED)
find_package(simdjson REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(Threads REQUIRED)
find_package(doctest REQUIRED)
find_package(nlohmann_json REQUIRED)
# Debian's interpreter: the binding is built for and tested with /usr/bin/python3.
set(Python3_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Python used for the binding and its tests")
find_package(Python3 COMPONENTS Interpreter Development.Module REQUIRED)
find_package(pybind11 CONFIG REQUIRED)
