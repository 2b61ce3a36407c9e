# A crash in a worker thread while two other threads sleep in functions of their own.
import ctypes
import threading
import time

ready = threading.Barrier(3)


def sleeping_reader():
    ready.wait()
    time.sleep(60)


def sleeping_writer():
    ready.wait()
    time.sleep(60)


def crash_in_worker():
    ready.wait()
    time.sleep(0.2)
    ctypes.string_at(0)


threads = [
    threading.Thread(target=sleeping_reader, name="reader", daemon=True),
    threading.Thread(target=sleeping_writer, name="writer", daemon=True),
]
for t in threads:
    t.start()
worker = threading.Thread(target=crash_in_worker, name="worker")
worker.start()
worker.join()
