"""TLS over memory BIOs for IMAP connections, so that a bulk fetch reads the socket in
bursts.

Why: an ``ssl.SSLSocket`` reads each TLS record with two ``recv`` calls (its 5-byte header,
then the body), and Dovecot sends ~4 KB records: ~150,000 system calls and as many wakeups
for the 300 MB bench mailbox. Here the socket is read in large chunks into an
``ssl.MemoryBIO`` and records are decrypted from memory; while a bulk fetch streams
(:attr:`BioSocket.bulk`), a read that brought little makes the next one wait ``coalesce``
seconds first, so the kernel gathers a burst instead of waking us per record. Measured on
the bench mailbox (fetch alone): ~0.6 s of CPU instead of ~1.0 s, the same wall time (the
server sets the pace); whole runs ~0.2 s less CPU. Outside bulk fetches nothing waits, so
IDLE and single commands answer as fast as before.

:class:`BioContext` stands in for the ``ssl.SSLContext`` handed to ``wrap_socket`` callers
(imaplib's STARTTLS, :func:`postline.protocols.net.wrap_tls`); the :class:`BioSocket` it
returns offers what imaplib, IMAPClient and :mod:`postline.protocols.imap_bulk` use of a
socket. Certificate and host name checks are the wrapped context's own.
"""

from __future__ import annotations

import io
import socket
import ssl
import time
from typing import Any

READ_BYTES = 1 << 20          # asked of the kernel per socket read
SMALL_READ = 64 << 10         # a read that brought less: wait before the next one
COALESCE_SECONDS = 0.001


class BioContext:
    """Wraps an ``ssl.SSLContext``: :meth:`wrap_socket` gives a :class:`BioSocket`."""

    def __init__(self, context: ssl.SSLContext, *, coalesce: float = COALESCE_SECONDS) -> None:
        self.context = context
        self.coalesce = coalesce

    def wrap_socket(self, sock: socket.socket, server_hostname: str | None = None,
                    **_ignored: Any) -> BioSocket:
        """Handshake over ``sock``; raises what ``SSLSocket`` would (SSLError,
        SSLCertVerificationError, OSError, timeouts)."""
        bio = BioSocket(sock, self.context, server_hostname, coalesce=self.coalesce)
        bio.do_handshake()
        return bio


class BioSocket:
    """A TLS client connection on a plain socket, with its records kept in memory."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext,
                 server_hostname: str | None, *, coalesce: float) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=False,
                                     server_hostname=server_hostname)
        self._read = getattr(self._obj, "_sslobj", self._obj).read
        self._buf = bytearray(READ_BYTES)
        self._view = memoryview(self._buf)
        self._coalesce = coalesce
        self.bulk = False           # set while a bulk fetch streams (imap_ops): coalesce
        self._last = READ_BYTES
        self._eof = False

    # -- TLS -----------------------------------------------------------------------------

    def do_handshake(self) -> None:
        """Run the handshake to its end."""
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill(wait=False):
                    raise ssl.SSLEOFError("EOF occurred in violation of protocol") from None
        self._flush()

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self._sock.sendall(data)

    def _fill(self, *, wait: bool = True) -> bool:
        if self._eof:
            return False
        if wait and self.bulk and self._coalesce and self._last < SMALL_READ:
            time.sleep(self._coalesce)   # let a burst gather (see the module docstring)
        n = self._sock.recv_into(self._buf)
        self._last = n
        if not n:
            self._eof = True
            self._in.write_eof()
            return False
        self._in.write(self._view[:n])
        return True

    # -- what imaplib and the bulk reader use ---------------------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Decrypted octets into ``buffer``: as many records as are in memory already (an
        SSLSocket gives one 4 KB record a call); 0 at the end of the stream."""
        n = nbytes or len(buffer)
        # the C object's read, not SSLObject.read's Python wrapper around it: one call per
        # TLS record (~75,000 for the bench mailbox)
        read = self._read
        view = memoryview(buffer)
        got = 0
        while True:
            try:
                got += read(n - got, view[got:] if got else view)
            except ssl.SSLWantReadError:
                if got:
                    return got
                self._flush()
                if not self._fill():
                    return 0
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return got
            if got >= n or not self._in.pending:
                return got

    def recv(self, n: int = 1024, flags: int = 0) -> bytes:
        """Up to ``n`` decrypted octets; b"" at the end of the stream."""
        buf = bytearray(n)
        k = self.recv_into(buf)
        return bytes(buf[:k])

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Encrypt and send all of ``data``."""
        view = memoryview(data)
        while view:
            k = self._obj.write(view)
            view = view[k:]
            self._flush()

    def send(self, data: Any, flags: int = 0) -> int:
        """Encrypt and send all of ``data``; returns its length."""
        self.sendall(data)
        return len(data)

    def makefile(self, mode: str = "rb", buffering: int | None = None, **_ignored: Any
                 ) -> io.BufferedReader:
        """A buffered binary reader of the decrypted stream (imaplib reads lines with it)."""
        return io.BufferedReader(_RawReader(self), buffering or io.DEFAULT_BUFFER_SIZE)

    def pending(self) -> int:
        """Decrypted octets ready without reading the socket."""
        return self._obj.pending()

    def version(self) -> str | None:
        return self._obj.version()

    def cipher(self) -> tuple | None:
        return self._obj.cipher()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._obj.getpeercert(binary_form)

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def fileno(self) -> int:
        return self._sock.fileno()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def shutdown(self, how: int) -> None:
        try:
            self._obj.unwrap()
            self._flush()
        except (ssl.SSLError, OSError, ValueError):
            pass
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


class _RawReader(io.RawIOBase):
    def __init__(self, sock: BioSocket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._sock.recv_into(b)
