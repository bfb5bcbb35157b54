"""Runs Python code in a microVM that writes a file, reads the file back and
prints it. Run: PYTHONPATH=build/python /usr/bin/python3 examples/hello.py"""
import ztee

with ztee.Sandbox() as sb:  # boots a microVM; destroyed on exit
    sb.exec(["python3", "-c", "open('/tmp/answer.txt', 'w').write(str(6 * 7))"])
    print(sb.read_file("/tmp/answer.txt").decode())  # 42
