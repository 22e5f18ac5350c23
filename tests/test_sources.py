"""Frame sources: files never drop frames; live sources stay current and reconnect."""

from __future__ import annotations

import functools
import http.server
import threading
import time

import cv2
import pytest

from realtime.errors import SourceError
from realtime.sources import LiveSource, SourceLost, classify, open_source
from tests.conftest import VIDEOS, WALKING, WEBCAM


def test_file_source_reads_every_frame_with_file_times():
    with open_source(str(WALKING)) as source:
        frames = list(source)
    assert source.info.kind == "file" and not source.info.live
    assert len(frames) == 41 == source.info.frame_count
    assert [f.index for f in frames] == list(range(41))
    assert frames[10].time == pytest.approx(10 / 12.5)


def test_classification():
    assert classify("0") == "camera"
    assert classify("rtsp://host/stream") == "stream"
    assert classify(str(VIDEOS)) == "folder"
    assert classify(str(WEBCAM)) == "file"
    with pytest.raises(SourceError, match="source not found"):
        classify("no-such-file.mp4")


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceError, match="no readable images"):
        open_source(str(tmp_path))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def video_server():
    """The shared clips over HTTP on loopback: a stream that ends, as a dropped feed does."""
    handler = functools.partial(_QuietHandler, directory=str(VIDEOS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stream_drops_stale_frames_and_reconnects(video_server):
    source = open_source(f"{video_server}/webcam_one_person.mp4", give_up_after_s=5)
    assert isinstance(source, LiveSource) and source.info.live
    delivered = 0
    try:
        for frame in source:
            assert frame.image.shape == (300, 400, 3)
            delivered += 1
            time.sleep(0.02)  # a consumer slower than the reader
            if source.stats.reconnects >= 1 and delivered > 20:
                break
    finally:
        source.close()
    stats = source.stats
    assert stats.reconnects >= 1 and len(stats.gaps) >= 1
    assert stats.dropped > 0  # stale frames were skipped, not queued
    assert delivered > 20


def test_stream_that_stays_down_ends_after_the_limit(video_server):
    import shutil
    import tempfile

    folder = tempfile.mkdtemp()
    shutil.copy(WALKING, f"{folder}/clip.gif")
    handler = functools.partial(_QuietHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.gif", give_up_after_s=1.5)
    server.shutdown()
    server.server_close()  # the feed goes away for good
    started = time.monotonic()
    frames = 0
    with pytest.raises(SourceLost, match="lost: no frame for"):
        for _ in source:
            frames += 1
    source.close()
    assert frames >= 1
    assert time.monotonic() - started < 20
