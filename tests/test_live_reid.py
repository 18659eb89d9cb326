"""Re-identification in live sessions: a person who leaves the camera and comes back counts once.

A generated 20 s clip (10 fps, 640x640) of three UTKFace people (a woman and two men by label, faces the
model reads right on their own, as in ``tests/test_video_people.py``); the woman leaves at 6 s and comes
back at 14 s in another lane, long after her first track ended (the tracker's ``lost_after`` is 2 s). Its
frames are posted one by one to ``/v1/live/sessions`` on a real uvicorn with the real detector, tracker,
model and dlib descriptors. Skipped without UTKFace (``../shared/datasets/UTKFace``) or dlib.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from facial_demographics.evaluation.scenes import PoolFace  # noqa: E402
from facial_demographics.evaluation.video_scenes import (  # noqa: E402
    VideoScene,
    faces_with_genders,
    make_video_scene,
    match_frame,
    utk_labels,
)
from facial_demographics.imaging import encode_jpeg  # noqa: E402
from facial_demographics.pipeline import FaceAnalyzer  # noqa: E402
from facial_demographics.server import ServerSettings, create_app, running_server  # noqa: E402
from facial_demographics.server.live import LiveSessions, _track_step  # noqa: E402
from facial_demographics.server.summary import parse_bands  # noqa: E402
from facial_demographics.server.tally import LiveTally  # noqa: E402
from facial_demographics.video.people import People  # noqa: E402
from facial_demographics.video.reid import REID_FRAMES, reid_unavailable  # noqa: E402

FPS, SECONDS, AWAY = 10.0, 20.0, (6.0, 14.0)


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    if reid_unavailable() is not None:
        pytest.skip("re-identification needs dlib and its model files")
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def scene(utkface_dir: Path, analyzer: FaceAnalyzer) -> VideoScene:
    """The woman leaves at 6 s and comes back at 14 s in a fourth lane."""
    from facial_demographics.evaluation.detection_eval import BenchmarkSettings, load_pool

    pool = load_pool(utkface_dir, BenchmarkSettings(pool_size=16, seed=3))
    read_right: list[PoolFace] = []
    for face in pool:
        found = analyzer.analyze(face.image).faces
        label = utk_labels(face.key)[1]
        if len(found) == 1 and found[0].gender == label and (found[0].gender_probability or 0) >= 0.9:
            read_right.append(face)
    trio = faces_with_genders(read_right, ["female", "male", "male"], seed=0)
    return make_video_scene(trio, 11, height=640, fps=FPS, seconds=SECONDS, faces=trio, away=AWAY)


@pytest.fixture(scope="module")
def frames(scene: VideoScene) -> list[tuple[np.ndarray, list[Any]]]:
    return [scene.render(i) for i in range(scene.frames)]


@pytest.fixture(scope="module")
def server(analyzer: FaceAnalyzer) -> Iterator[str]:
    with running_server(create_app(ServerSettings(), analyzer=analyzer)) as url:
        yield url


def test_returning_person_counts_once_in_the_live_tally(server: str, scene: VideoScene,
                                                        frames: list[tuple[np.ndarray, list[Any]]]) -> None:
    owners: dict[int, list[int]] = {}  # track id -> the truth people its faces were
    ended: dict[int, dict[str, Any]] = {}  # track id -> its final answer
    server_ms = []
    with httpx.Client(base_url=server, timeout=120) as client:
        session = client.post("/v1/live/sessions").json()["session"]
        for i, (image, truth) in enumerate(frames):
            answer = client.post(f"/v1/live/sessions/{session}/frames", params={"t": i / FPS},
                                 content=encode_jpeg(image, quality=80), headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            server_ms.append(body["server_ms"])
            for person, j in match_frame(truth, body["faces"]).items():
                if body["faces"][j]["track_id"] is not None:
                    owners.setdefault(body["faces"][j]["track_id"], []).append(person)
            ended.update({t["track_id"]: t for t in body["ended_tracks"]})
            assert [t["track_id"] for t in body["ended_tracks"]] == body["ended"]
            assert all(t["person_id"] is None for t in body["tracks"])  # set when a track ends
        assert body["tally"]["reid"] and body["tally"]["note"] is None
        # An empty frame after the tracks' lost-after time ends them all: the final answers come back.
        empty = encode_jpeg(scene.backdrop, quality=80)
        last = client.post(f"/v1/live/sessions/{session}/frames", params={"t": SECONDS + 3}, content=empty).json()
        ended.update({t["track_id"]: t for t in last["ended_tracks"]})
        assert last["tracks"] == [] and last["tally"]["open"] == 0
        assert client.delete(f"/v1/live/sessions/{session}").status_code == 204
        final = client.get(f"/v1/live/sessions/{session}/tally").json()
    assert (final["people"], final["ended"], final["counted_by"], final["reid"]) == (3, True, "person", True)
    assert (final["female"], final["male"]) == (1, 2), final
    assert last["tally"]["people"] == 3

    owner = {t: max(set(v), key=v.count) for t, v in owners.items()}
    persons: dict[int, set[int]] = {}
    for track_id, track in ended.items():
        if track_id in owner and track["person_id"] is not None:
            persons.setdefault(owner[track_id], set()).add(track["person_id"])
    assert sorted(persons) == [0, 1, 2] and all(len(ids) == 1 for ids in persons.values()), persons
    woman = sorted(t for t in ended if owner.get(t) == 0 and ended[t]["person_id"] is not None)
    assert len(woman) == 2, woman  # one track before she left, one after she came back
    first, back = woman
    assert ended[back]["person_id"] == ended[first]["person_id"] == first
    print(f"live frames with re-id: {np.mean(server_ms):.0f} ms mean, {np.max(server_ms):.0f} ms at most")


def test_reid_cost_per_live_frame(analyzer: FaceAnalyzer, frames: list[tuple[np.ndarray, list[Any]]]) -> None:
    """The same frames through a live session's step in-process: the time re-identification adds."""
    sessions = LiveSessions(lambda: analyzer)
    state = sessions._new_session(LiveTally(parse_bands(None)), "test")
    assert state.people is not None and state.people.reid is not None
    started = time.perf_counter()
    for i, (image, _) in enumerate(frames):
        _track_step(state, image, i, i / FPS)
    state.finalise()  # the open tracks are described at the end
    total = time.perf_counter() - started
    reid = state.people.reid
    per_frame = 1000 * reid.seconds / len(frames)
    print(f"re-id adds {per_frame:.1f} ms per live frame on average ({1000 * total / len(frames):.0f} ms a frame "
          f"in all; {reid.described} descriptors, {1000 * reid.seconds / max(1, reid.described):.0f} ms each "
          f"with cropping)")
    assert reid.described <= REID_FRAMES * 8 and reid.seconds < total / 2
    assert state.tally.to_out().people == 3 and not reid._best  # crops only for open tracks: none left


def test_people_memory_is_bounded() -> None:
    """``max_people``: the person whose last track ended longest ago is forgotten, and their tracks with them."""
    from facial_demographics.video.results import TrackSummary

    class _Evidence:
        usable = (0.0, 5.0)

    def track(i: int) -> TrackSummary:
        return TrackSummary(i, i, i + 1, 10.0 * i, 10.0 * i + 5, 2, (0, 0, 1, 1), 30.0, (20.0, 40.0), "male", 0.9)

    people = People(None, max_people=3)
    for i in range(10):
        people.end([track(i)], lambda _: _Evidence())  # type: ignore[arg-type,return-value]
    assert sorted(people._tracks) == [7, 8, 9] and people.forgotten == 7
    unbounded = People(None)
    for i in range(10):
        unbounded.end([track(i)], lambda _: _Evidence())  # type: ignore[arg-type,return-value]
    assert len(unbounded._tracks) == 10 and unbounded.forgotten == 0


def test_the_live_tally_and_video_take_the_same_tracks_for_glimpses() -> None:
    """A glimpse is a track whose usable frames span less than a second, in ``video`` and live alike: a
    sharp face seen for half a second is as little evidence in a live session as in a video file."""
    from facial_demographics.server.live import _glimpses
    from facial_demographics.video.people import MIN_PERSON_S, is_glimpse
    from facial_demographics.video.results import TrackSummary

    class _Evidence:
        def __init__(self, best: float, usable: tuple[float, float] | None):
            self.best, self.usable = best, usable

    evidence = {1: _Evidence(0.1, None),                      # never usable: a false positive
                2: _Evidence(0.9, (3.0, 3.0 + MIN_PERSON_S / 2)),  # sharp but only half a second
                3: _Evidence(0.9, (3.0, 3.0 + 2 * MIN_PERSON_S))}  # a person

    class _Tracker:
        def evidence(self, track_id: int) -> _Evidence:
            return evidence[track_id]

    ended = [TrackSummary(i, i, i + 1, 3.0, 6.0, 2, (0, 0, 1, 1), 30.0, (20.0, 40.0), "male", 0.9) for i in evidence]
    assert _glimpses(_Tracker(), ended) == {1, 2} == {i for i, e in evidence.items() if is_glimpse(e)}  # type: ignore[arg-type]
    people = People(None).end(ended, evidence.__getitem__)  # type: ignore[arg-type]
    assert [t.person_id is None for t in people] == [True, True, False]
