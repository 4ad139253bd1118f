"""The egress forwarder, inside a sandbox with ``network.allow`` (cerver-sandbox-infra).

Stdlib only; run as ``python -I -S -c <this source> PORT SOCKET ARGV...`` as the first
program inside bwrap. It binds ``127.0.0.1:PORT`` in the sandbox's own network namespace
(which has nothing but a loopback), forks a child that copies every connection accepted
there to the unix socket ``SOCKET`` (the host's egress proxy, which decides), and execs
``ARGV`` in the parent process (so the program the host started keeps its pid). The
forwarder is a convenience, not a boundary: sandboxed code may talk to ``SOCKET``
directly, or kill the forwarder, and reaches nothing more either way.
"""

import asyncio
import ctypes
import os
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1
CHUNK = 64 * 1024


async def pump(reader, writer):
    try:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def serve(listening, path):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(path)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(handle, sock=listening)
    await server.serve_forever()


def main():
    port, path, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(128)
    parent = os.getpid()
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # never hold the host's pipes open
            os.dup2(null, fd)
        keep = listening.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        try:
            asyncio.run(serve(listening, path))
        finally:
            os._exit(0)
    listening.close()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
