"""A private libvirtd (Debian ``libvirt-daemon-system``) with real QEMU (TCG).

    python tools/harness/libvirtd.py start      # prints the URI and the run dir
    python tools/harness/libvirtd.py stop DIR

No systemd and nothing shared with a system libvirtd: the daemon runs in
*session* mode as the unprivileged ``libvirt-qemu`` user (created by the
Debian package), with every file it owns (config, domain definitions, socket,
QEMU logs) under its own run dir in /tmp (libvirt-qemu must be able to reach
it, which pytest's private tmp dirs would not allow). Several such daemons can
run side by side. Clients connect with
``qemu+unix:///session?socket=<run dir>/runtime/libvirt/libvirt-sock``.

The daemon can be stopped and started again in the middle of a test: QEMU
processes outlive it and the new daemon reconnects to them, as a system
libvirtd restarted by an upgrade does.

Guests (``guest_xml``) boot the project's own tiny image (guestimage.py):
direct kernel boot, an i6300esb watchdog, a pvpanic device, the console on a
file and a command port on a unix socket (``Guest.send``). No disk, except for
a guest given ``failing_disk=True``: a virtio disk whose raw file lies on a
tmpfs far smaller than the disk (``LibvirtDaemon.small_fs``), with
``error_policy='stop'``, so a guest that fills it (``Guest.send("fill")``) is
paused by QEMU on a real ENOSPC, the I/O error a full datastore gives.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuid_mod
from xml.sax.saxutils import escape

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import guestimage, procs  # noqa: E402

USER = "libvirt-qemu"
LIBVIRTD = "/usr/sbin/libvirtd"

QEMU_CONF = """\
# written by tools/harness/libvirtd.py
stdio_handler = "file"
"""

LIBVIRTD_CONF = """\
# written by tools/harness/libvirtd.py
log_outputs = "3:file:{log}"
keepalive_interval = 2
keepalive_count = 3
"""


def available() -> str | None:
    """None when libvirtd, QEMU and the python binding are there; else what is missing."""
    missing = [p for p in (LIBVIRTD, "/usr/bin/qemu-system-x86_64") if not os.path.exists(p)]
    try:
        pwd.getpwnam(USER)
    except KeyError:
        missing.append(f"user {USER}")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        missing.append("libvirt-python")
    return ", ".join(missing) or None


class LibvirtDaemon:
    def __init__(self, base_dir: str | None = None) -> None:
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="ih-libvirt-", dir="/tmp")
        pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.config = os.path.join(self.base_dir, "config")
        self.runtime = os.path.join(self.base_dir, "runtime")
        self.cache = os.path.join(self.base_dir, "cache")
        self.images = os.path.join(self.base_dir, "images")
        self.log = os.path.join(self.base_dir, "libvirtd.log")
        self.out = os.path.join(self.base_dir, "libvirtd.out")
        self.socket = os.path.join(self.runtime, "libvirt", "libvirt-sock")
        self.disks = os.path.join(self.base_dir, "disks")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"qemu+unix:///session?socket={self.socket}"

    def _prepare(self) -> None:
        for d in (self.base_dir, self.config, os.path.join(self.config, "libvirt"),
                  self.runtime, self.cache, self.images):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        os.chmod(self.runtime, 0o700)
        with open(os.path.join(self.config, "libvirt", "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        with open(os.path.join(self.config, "libvirt", "libvirtd.conf"), "w") as f:
            f.write(LIBVIRTD_CONF.format(log=self.log))
        kernel, initrd = guestimage.build()
        for src in (kernel, initrd):
            dst = os.path.join(self.images, os.path.basename(src))
            if not os.path.exists(dst):
                shutil.copyfile(src, dst)
        for root, dirs, files in os.walk(self.base_dir):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), self.uid, self.gid)
        os.lchown(self.base_dir, self.uid, self.gid)

    def start(self, timeout: float = 30.0) -> LibvirtDaemon:
        if self.starts == 0:
            self._prepare()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": self.base_dir,
               "XDG_CONFIG_HOME": self.config, "XDG_RUNTIME_DIR": self.runtime,
               "XDG_CACHE_HOME": self.cache, "XDG_DATA_HOME": self.cache, "LANG": "C"}
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
        out = open(self.out, "ab")
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
             "--", LIBVIRTD, "-f", os.path.join(self.config, "libvirt", "libvirtd.conf")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, cwd=self.base_dir)
        out.close()
        self.starts += 1
        procs.wait_for(self._answers, timeout, f"libvirtd in {self.base_dir} to answer")
        return self

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"libvirtd exited with {self.proc.returncode}: "
                               f"{self._tail(self.out)} {self._tail(self.log)}")
        if not os.path.exists(self.socket):
            return False
        import libvirt

        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return False
        conn.close()
        return True

    @staticmethod
    def _tail(path: str) -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()[-1500:]
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: libvirtd exits, its QEMU processes keep running."""
        if self.proc is not None:
            procs.stop(self.proc, timeout)

    def kill(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(self):
        import libvirt

        return libvirt.open(self.uri)

    SMALL_FS = "1m"
    DISK_BYTES = 64 << 20

    def small_fs(self) -> str:
        """A tmpfs of SMALL_FS mounted on the run dir's ``disks`` (once), owned by
        libvirt-qemu: files there cannot grow past it."""
        if not os.path.ismount(self.disks):
            os.makedirs(self.disks, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o",
                            f"size={self.SMALL_FS},mode=0700,uid={self.uid},gid={self.gid}",
                            "ih-guest-disks", self.disks], check=True, capture_output=True)
        return self.disks

    def failing_disk(self, name: str) -> str:
        """A sparse DISK_BYTES raw file on the small tmpfs: writes past its size fail."""
        path = os.path.join(self.small_fs(), f"{name}.raw")
        with open(path, "wb") as f:
            f.truncate(self.DISK_BYTES)
        os.chown(path, self.uid, self.gid)
        return path

    def guest(self, name: str, uuid: str | None = None, watchdog_action: str = "none",
              heartbeat: int = 2, start: bool = True, failing_disk: bool = False) -> Guest:
        """Define (and start) a tiny guest."""
        g = Guest(self, name, uuid or str(uuid_mod.uuid4()), watchdog_action, heartbeat,
                  disk=self.failing_disk(name) if failing_disk else None)
        conn = self.connect()
        try:
            dom = conn.defineXML(g.xml())
            if start:
                dom.create()
        finally:
            conn.close()
        return g

    def close(self) -> None:
        """Destroy every domain, stop the daemon, remove the run dir."""
        if self.running:
            import libvirt

            try:
                conn = self.connect()
                for dom in conn.listAllDomains():
                    try:
                        if dom.isActive():
                            dom.destroy()
                        dom.undefine()
                    except libvirt.libvirtError:
                        pass
                conn.close()
            except libvirt.libvirtError:
                pass
        self.stop()
        self._kill_leftover_qemu()
        self._unmount()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _unmount(self) -> None:
        if os.path.ismount(self.disks):
            subprocess.run(["umount", self.disks], capture_output=True)

    def _kill_leftover_qemu(self) -> None:
        """QEMU processes of this run dir that outlived the daemon (a test killed it)."""
        for pid in qemu_pids(self.base_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def qemu_pids(marker: str) -> list[int]:
    """PIDs of QEMU processes whose command line mentions ``marker`` (a run dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("/usr/bin/qemu-system") and marker in cmd:
            found.append(int(entry))
    return found


class Guest:
    def __init__(self, daemon: LibvirtDaemon, name: str, uuid: str, watchdog_action: str,
                 heartbeat: int, disk: str | None = None) -> None:
        self.daemon = daemon
        self.disk = disk
        self.name = name
        self.uuid = uuid
        self.watchdog_action = watchdog_action
        self.heartbeat = heartbeat
        self.console = os.path.join(daemon.base_dir, f"{name}.console")
        self.control = os.path.join(daemon.base_dir, f"{name}.ctl")

    def xml(self) -> str:
        d = self.daemon
        kernel, initrd = (os.path.join(d.images, os.path.basename(p))
                          for p in guestimage.paths())
        disk = "" if self.disk is None else f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' error_policy='stop' rerror_policy='stop'/>
      <source file='{escape(self.disk)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
        return f"""<domain type='qemu'>
  <name>{escape(self.name)}</name>
  <uuid>{self.uuid}</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>{escape(self.name)}</nova:name>
    </nova:instance>
  </metadata>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 loglevel=3 panic=0 ih.heartbeat={self.heartbeat}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>preserve</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disk}
    <serial type='file'><source path='{self.console}'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='{self.control}'/><target port='1'/></serial>
    <watchdog model='i6300esb' action='{self.watchdog_action}'/>
    <panic model='isa'/>
    <memballoon model='none'/>
  </devices>
</domain>"""

    def console_text(self) -> str:
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_console(self, text: str, timeout: float = 120.0) -> None:
        procs.wait_for(lambda: text in self.console_text(), timeout,
                       f"{self.name} to print {text!r} (console: {self.console_text()[-500:]})",
                       interval=0.2)

    def send(self, command: str) -> None:
        """One command line to the guest's init, on its second serial port."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.control)
            s.sendall(command.encode() + b"\n")
            time.sleep(0.2)  # let QEMU drain it into the UART before we hang up

    def qemu_pid(self) -> int:
        with open(os.path.join(self.daemon.runtime, "libvirt", "qemu", "run",
                               f"{self.name}.pid")) as f:
            return int(f.read().strip())

    def kill_qemu(self) -> int:
        pid = self.qemu_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def state(self) -> tuple[int, int]:
        conn = self.daemon.connect()
        try:
            return tuple(conn.lookupByUUIDString(self.uuid).state())
        finally:
            conn.close()

    def start(self) -> None:
        conn = self.daemon.connect()
        try:
            conn.lookupByUUIDString(self.uuid).create()
        finally:
            conn.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("start")
    s = sub.add_parser("stop")
    s.add_argument("dir")
    args = p.parse_args(argv)
    if args.cmd == "start":
        d = LibvirtDaemon().start()
        print(f"{d.uri}\n{d.base_dir}\npid {d.proc.pid}")
        return 0
    d = LibvirtDaemon(args.dir)
    d.proc = None
    subprocess.run(["pkill", "-TERM", "-f", f"libvirtd -f {args.dir}/"], check=False)
    d._kill_leftover_qemu()
    d._unmount()
    return 0


if __name__ == "__main__":
    sys.exit(main())
