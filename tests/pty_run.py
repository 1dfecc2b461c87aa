"""Runs a command on a new pseudo-terminal and copies everything it wrote to the terminal,
byte for byte, to standard output. Exits with the command's status. Used by the CLI tests
of terminal progress.

usage: python3 tests/pty_run.py COMMAND [ARG...]
"""
import os
import select
import subprocess
import sys

# The slave side stays open until the child has exited and everything it wrote has been
# read: a pty whose slave closes can drop output still in flight.
master, slave = os.openpty()
child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                         start_new_session=True)
out, exited = b"", False
while True:
    ready, _, _ = select.select([master], [], [], 0.2)
    if ready:
        out += os.read(master, 65536)
    elif exited:
        break  # quiet for 0.2 s after the exit: all of it has arrived
    else:
        exited = child.poll() is not None
os.close(slave)
os.close(master)
sys.stdout.buffer.write(out)
sys.exit(child.returncode)
