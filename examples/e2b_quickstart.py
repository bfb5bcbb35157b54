"""E2B-style quickstart on libztee: the only change from code written for
E2B's Python SDK is the import line. Runs in-process, no API key, no network.
Run: PYTHONPATH=build/python /usr/bin/python3 examples/e2b_quickstart.py"""
from ztee.e2b import Sandbox  # was: from e2b import Sandbox

sbx = Sandbox.create()  # a microVM; killed by a timer after 300 s unless killed before

result = sbx.commands.run('python3 -c "print(6 * 7)"')
print(result.stdout.strip())

sbx.files.write("/home/user/hello.txt", "Hello from the sandbox")
print(sbx.files.read("/home/user/hello.txt"))

for entry in sbx.files.list("/home/user"):
    print(entry.type.value, entry.name)

handle = sbx.commands.run("sleep 600", background=True)
print("running:", [p.pid for p in sbx.commands.list()] == [handle.pid])
handle.kill()

try:
    sbx.commands.run("exit 3")
except Exception as e:  # CommandExitException
    print("exit code:", e.exit_code)

sbx.kill()
