"""tuspy for scripts/bench: upload FILEs to ENDPOINT, CONCURRENCY at a time (threads),
in CHUNK-byte PATCHes (0: tuspy's default, the whole file in one).

    python3 tuspy_upload.py ENDPOINT CONCURRENCY CHUNK FILE...
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

from tusclient import client


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: python3 tuspy_upload.py ENDPOINT CONCURRENCY CHUNK FILE...")
    endpoint, concurrency, chunk, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    tus = client.TusClient(endpoint)

    def upload(path):
        kwargs = {"chunk_size": chunk} if chunk > 0 else {}
        up = tus.uploader(path, metadata={"filename": os.path.basename(path)}, **kwargs)
        up.upload()
        if up.offset != os.path.getsize(path):
            raise RuntimeError(f"{path}: stopped at {up.offset}")

    with ThreadPoolExecutor(max(concurrency, 1)) as pool:
        for _ in pool.map(upload, files):
            pass


main()
