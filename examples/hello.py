"""Runs python3 in a microVM. Run: PYTHONPATH=build/python python3 examples/hello.py"""
import ztee

with ztee.Sandbox() as sb:  # boots a microVM; destroyed on exit
    r = sb.run("python3 -c 'print(6*7)'")
    print(r.stdout, end="")  # 42
