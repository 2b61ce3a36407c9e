"""A live process for `crashtrace dump`: named threads blocked in known places and one
busy thread. Usage: dump_threads.py COUNTER_FILE [EXTRA_SLEEPERS [MAIN_THREAD_NAME]]

The busy thread writes how many loops it has run into COUNTER_FILE (8 bytes, mmap'd), so
a test can see it advance while the process is dumped. Each thread also sets its OS name
(what the kernel, and so crashtrace, knows it by) to its threading name.
"""
import ctypes
import mmap
import socket
import struct
import sys
import threading
import time

libc = ctypes.CDLL(None)


def name_os_thread(name):
    # PR_SET_NAME: the calling thread's comm.
    libc.prctl(15, name.encode(), 0, 0, 0)


lock = threading.Lock()
lock.acquire()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
counter_file = open(sys.argv[1], "r+b")
counter = mmap.mmap(counter_file.fileno(), 8)


def sleeper():
    name_os_thread(threading.current_thread().name)
    time.sleep(3600)


def waiter():
    name_os_thread("waiter")
    lock.acquire()


def acceptor():
    name_os_thread("acceptor")
    listener.accept()


def busy():
    name_os_thread("busy")
    n = 0
    while True:
        n += 1
        counter[0:8] = struct.pack("<Q", n)


threads = [
    threading.Thread(target=sleeper, name="sleeper", daemon=True),
    threading.Thread(target=waiter, name="waiter", daemon=True),
    threading.Thread(target=acceptor, name="acceptor", daemon=True),
    threading.Thread(target=busy, name="busy", daemon=True),
]
extra = int(sys.argv[2]) if len(sys.argv) > 2 else 0
threads += [
    threading.Thread(target=sleeper, name=f"sleeper-{i}", daemon=True) for i in range(extra)
]
for t in threads:
    t.start()
if len(sys.argv) > 3:
    # A name chosen by the process, shown by crashtrace: terminal controls in it.
    name_os_thread(sys.argv[3])
print("ready", flush=True)
# The main thread blocks reading stdin until the test closes it.
sys.stdin.read()
