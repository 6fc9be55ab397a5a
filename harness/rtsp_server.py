"""GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0) serving pre-encoded H.264, and the
one-off encoder that makes its files. Run by Debian's /usr/bin/python3, which has the GObject
bindings; it imports nothing of ours.

    /usr/bin/python3 rtsp_server.py encode --clip face.avi --out face.mkv --fps 15
    /usr/bin/python3 rtsp_server.py serve --port 8554 --mount cam=face.mkv --mount door=face.mkv:udp
    /usr/bin/python3 rtsp_server.py serve --port 8555 --mount cam=face.mkv --auth user:secret

`encode` turns a clip into H.264 in Matroska once, at the camera's size and rate, with a keyframe
every second as IP cameras send; `serve` then only demuxes and packetises it (filesrc !
matroskademux ! h264parse ! rtph264pay), so no encoder runs beside the service being measured and a
dozen cameras cost the server a few percent of one core. The media's sinks keep to the clock, so
each mount sends at the file's own rate.

Each ``--mount NAME=FILE[:PROTOCOLS]`` serves FILE at rtsp://127.0.0.1:PORT/NAME; PROTOCOLS is
``any``, ``tcp`` or ``udp``: what the server accepts, so a test can tell which transport a client
really used. A mount's media is shared by its clients and ends with the file: make the file outlast
the run. With ``--auth USER:PASSWORD`` every mount asks for HTTP Basic credentials (401 first, as
cameras do). "ready" on stdout says the port is bound.
"""

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

ENCODE = (
    'filesrc location="{clip}" ! decodebin ! videoconvert ! videorate ! videoscale ! '
    "video/x-raw,format=I420,framerate={fps}/1,width={width},height={height} ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate={kbps} ! h264parse ! "
    'matroskamux ! filesink location="{out}"'
)
# SPS and PPS before each keyframe from h264parse, which knows where a frame ends: rtph264pay's own
# config-interval put them between the slices of a keyframe, and FFmpeg then decoded it twice.
SERVE = '( filesrc location="{path}" ! matroskademux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )'
PROTOCOLS = {
    "any": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP,
    "tcp": GstRtsp.RTSPLowerTrans.TCP,
    "udp": GstRtsp.RTSPLowerTrans.UDP,
}


def encode(args: argparse.Namespace) -> None:
    tmp = f"{args.out}.{os.getpid()}.tmp"
    spec = ENCODE.format(clip=args.clip, out=tmp, fps=args.fps, width=args.width, height=args.height,
                         kbps=args.kbps)  # fmt: skip
    pipeline = Gst.parse_launch(spec)
    pipeline.set_state(Gst.State.PLAYING)
    message = pipeline.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if message.type == Gst.MessageType.ERROR:
        error, debug = message.parse_error()
        os.unlink(tmp)
        sys.exit(f"encoding {args.clip} failed: {error.message} ({debug})")
    os.replace(tmp, args.out)


def serve(args: argparse.Namespace) -> None:
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    role = None
    if args.auth:
        user, password = args.auth.split(":", 1)
        role = "viewer"
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", role)
        # No default token: a client without credentials is answered 401 and asked for them.
        auth = GstRtspServer.RTSPAuth()
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
    mounts = server.get_mount_points()
    for spec in args.mount:
        name, rest = spec.split("=", 1)
        path, _, protocols = rest.rpartition(":")
        if protocols not in PROTOCOLS:  # no protocols given, and the path may hold a colon
            path, protocols = rest, "any"
        if not os.path.isfile(path):
            sys.exit(f"no such file: {path}")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(SERVE.format(path=path))
        factory.set_shared(True)
        factory.set_protocols(PROTOCOLS[protocols])
        if role:
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role(role, "media.factory.access", True)
            perms.add_permission_for_role(role, "media.factory.construct", True)
            factory.set_permissions(perms)
        mounts.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot bind 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    parent = os.getppid()

    def orphaned() -> bool:
        # A test or benchmark killed before it could stop us must not leave a camera running.
        if os.getppid() != parent:
            loop.quit()
            return False
        return True

    GLib.timeout_add_seconds(1, orphaned)
    print("ready", flush=True)
    loop.run()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="a clip to H.264 in Matroska, once")
    enc.add_argument("--clip", required=True)
    enc.add_argument("--out", required=True)
    enc.add_argument("--fps", type=int, default=15)
    enc.add_argument("--width", type=int, default=640)
    enc.add_argument("--height", type=int, default=480)
    enc.add_argument("--kbps", type=int, default=1024, help="about what a camera's 640x480 substream sends")
    srv = sub.add_parser("serve", help="serve encoded files over RTSP")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--mount", action="append", required=True)
    srv.add_argument("--auth", help="USER:PASSWORD required on every mount")
    args = ap.parse_args()
    Gst.init(None)
    if args.command == "encode":
        encode(args)
    else:
        serve(args)


if __name__ == "__main__":
    main()
