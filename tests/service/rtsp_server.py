"""An RTSP camera for the tests: GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0),
serving clips as H.264 at 15 fps. Run by Debian's /usr/bin/python3, which has the GObject bindings;
it imports nothing of ours.

    /usr/bin/python3 rtsp_server.py --port 8554 --mount cam=/tmp/clip.avi --mount door=/tmp/clip.avi:udp
    /usr/bin/python3 rtsp_server.py --port 8555 --mount cam=/tmp/clip.avi --auth user:secret

Each ``--mount NAME=CLIP[:PROTOCOLS]`` serves CLIP at rtsp://127.0.0.1:PORT/NAME; PROTOCOLS is
``any``, ``tcp`` or ``udp``: what the server accepts, so a test can tell which transport a client
really used. With ``--auth USER:PASSWORD`` every mount asks for HTTP Basic credentials (401 first,
as cameras do). "ready" on stdout says the port is bound.
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

LAUNCH = (
    "( multifilesrc location={clip} loop=true ! decodebin ! videoconvert ! videorate ! videoscale ! "
    "video/x-raw,framerate={fps}/1,width={width},height={height} ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 )"
)
PROTOCOLS = {
    "any": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP,
    "tcp": GstRtsp.RTSPLowerTrans.TCP,
    "udp": GstRtsp.RTSPLowerTrans.UDP,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mount", action="append", required=True)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--auth", help="USER:PASSWORD required on every mount")
    args = ap.parse_args()
    Gst.init(None)
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
        clip, _, protocols = rest.partition(":")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(LAUNCH.format(clip=clip, fps=args.fps, width=args.width, height=args.height))
        factory.set_shared(True)
        factory.set_protocols(PROTOCOLS[protocols or "any"])
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


if __name__ == "__main__":
    main()
