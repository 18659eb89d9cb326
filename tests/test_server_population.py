"""Population summaries over REST (``/v1/summary``, ``/v1/summary/results``) and the live tally
(``/v1/live/sessions/{id}/tally``), on a real uvicorn with the untrained test model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from server_support import assert_error

from facial_demographics.imaging import encode_jpeg
from facial_demographics.model import ModelBundle, write_bundle
from facial_demographics.pipeline import FaceAnalyzer
from facial_demographics.population import AgeBands, PopulationCalibration, estimate
from facial_demographics.population.records import calibration_of, evidence_from_faces
from facial_demographics.server import ServerSettings, create_app, running_server
from facial_demographics.server import summary as summary_module
from facial_demographics.server.schemas import SummaryOut
from facial_demographics.server.tally import MAX_PEOPLE, LiveTally

BANDS = "13,18,25,35,45,55,65"


@pytest.fixture(scope="module")
def calibrated_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model with a population calibration in its manifest (measured on made-up faces), so the
    server's summaries take the EM path with the bundle's calibration."""
    rng = np.random.default_rng(3)
    n = 400
    ages = rng.uniform(0, 90, n).round()
    grid = np.arange(101)
    probs = np.exp(-0.5 * ((grid[None] - ages[:, None] - rng.normal(0, 4, (n, 1))) / 10) ** 2)
    probs /= probs.sum(axis=1, keepdims=True)
    genders = rng.integers(0, 2, n)
    p_female = np.clip(0.25 + 0.5 * genders + rng.normal(0, 0.1, n), 0.01, 0.99)
    calibration = PopulationCalibration.fit(probs, p_female, ages, genders, source="made-up test faces")
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    manifest.pop("sha256", None)
    manifest["population"] = calibration.to_dict()
    out = tmp_path_factory.mktemp("calibrated")
    return write_bundle(out, tiny_bundle / "model.onnx", manifest)


@pytest.fixture(scope="module")
def server(calibrated_bundle: Path) -> Iterator[str]:
    settings = ServerSettings(max_upload_bytes=3 * 2**20, max_files=4)
    with running_server(create_app(settings, analyzer=FaceAnalyzer(model=calibrated_bundle))) as url:
        yield url


@pytest.fixture(scope="module")
def photos(astronaut: np.ndarray) -> list[tuple[str, bytes]]:
    """One face, four faces in a row, and a file that is not an image."""
    row = np.concatenate([astronaut[0:300, 100:350]] * 4, axis=1)
    return [("astronaut.jpg", encode_jpeg(astronaut)), ("row.jpg", encode_jpeg(row)),
            ("notes.jpg", b"This is a shopping list, not a photo.\n")]


def post_summary(url: str, files: list[tuple[str, bytes]], **params: Any) -> httpx.Response:
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return httpx.post(f"{url}/v1/summary", files=parts, params=params, timeout=120)


def post_results(url: str, body: Any, **params: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/summary/results", json=body, params=params, timeout=120)


def test_summary_matches_estimate_on_the_same_faces(
    server: str, photos: list[tuple[str, bytes]], calibrated_bundle: Path
) -> None:
    response = post_summary(server, photos, bands=BANDS, interval=0.8)
    assert response.status_code == 200, response.text
    body = response.json()
    results, summary = body["results"], body["summary"]
    assert [r["path"] for r in results] == ["astronaut.jpg", "row.jpg", "notes.jpg"]
    assert [len(r["faces"]) for r in results] == [1, 4, 0]
    assert results[2]["error_code"] == "not_an_image"
    faces = [f for r in results for f in r["faces"]]
    assert all(set(f["age_distribution"]) == {"start", "p"} for f in faces)

    calibration = calibration_of(ModelBundle.load(calibrated_bundle))
    assert calibration is not None
    expected = estimate(evidence_from_faces(faces), AgeBands.parse(BANDS), calibration=calibration, interval=0.8,
                        context={"images": 3, "errors": 1, "no_face": 0}).to_dict()
    assert summary == json.loads(SummaryOut.model_validate(expected).model_dump_json())  # as the server sends it
    assert summary["method"] == "em" and summary["faces"] == 5 and summary["people"] is None
    assert summary["bands"] == ["0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
    assert sum(row["share"] for row in summary["age"]) == pytest.approx(1, abs=1e-3)
    assert [g["gender"] for g in summary["gender"]] == ["female", "male"]
    assert len(summary["age_gender"]) == 2 * len(summary["bands"])
    rows = summary["age"] + summary["gender"] + summary["age_gender"]
    assert all(row[k] is not None for row in rows for k in ("share", "low", "high", "count")), \
        "estimate() gave a NaN share or bound (sent as JSON null)"
    for row in rows:
        assert 0 <= row["low"] <= row["share"] <= row["high"] <= 1


def test_results_endpoint_gives_the_same_summary(server: str, photos: list[tuple[str, bytes]]) -> None:
    """The page's path: analyse photo by photo, then summarise the results (bands changed without re-upload)."""
    results = []
    for name, data in photos:
        answer = httpx.post(f"{server}/v1/analyze", files={"file": (name, data)}, timeout=60)
        results.extend(answer.json()["results"] if answer.status_code == 200 else
                       [{"path": name, "faces": [], "error": answer.json()["error"]["message"]}])
    direct = post_summary(server, photos, bands="report").json()["summary"]
    summed = post_results(server, {"results": results}, bands="report")
    assert summed.status_code == 200, summed.text
    assert summed.json()["summary"] == direct
    assert (direct["images"], direct["errors"], direct["faces"]) == (3, 1, 5)
    assert direct["bands"] == ["0-24", "25-49", "50-74", "75-99", "100+"]
    # Only the distribution and gender are read: a minimal face is enough.
    minimal = {"results": [{"faces": [{"age_distribution": {"start": 30, "p": [0.5, 0.5]}, "gender": "male",
                                       "gender_probability": 0.9}]}]}
    one = post_results(server, minimal)
    assert one.status_code == 200, one.text
    assert one.json()["summary"]["faces"] == 1 and one.json()["summary"]["bands"][0] == "0-12"


def test_unreadable_images_are_counted_not_dropped(server: str, photos: list[tuple[str, bytes]]) -> None:
    astronaut, _, notes = photos
    summary = post_summary(server, [notes, astronaut, ("empty.jpg", b"")]).json()["summary"]
    assert (summary["images"], summary["errors"], summary["no_face"], summary["faces"]) == (3, 2, 0, 1)
    # Every file unreadable: the first one's error, as /v1/analyze answers.
    assert_error(post_summary(server, [notes]), 415, "not_an_image", item="notes.jpg")


def test_summary_counts_only_the_faces_kept(server: str, photos: list[tuple[str, bytes]]) -> None:
    astronaut, row, notes = photos
    everyone = post_summary(server, photos).json()
    sizes = [min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) for r in everyone["results"]
             for f in r["faces"]]
    assert everyone["summary"]["faces"] == 5 and "filtered" not in everyone["results"][0]
    # Above every face: none counted, each photo is "without a face", the unreadable one still counted.
    response = post_summary(server, photos, min_face=int(max(sizes)) + 1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r.get("filtered") for r in body["results"]] == [1, 4, None]
    summary = body["summary"]
    assert (summary["faces"], summary["images"], summary["errors"], summary["no_face"]) == (0, 3, 1, 2)
    strict = post_summary(server, photos, min_score=1).json()
    assert strict["summary"]["faces"] == 0 and [r.get("filtered") for r in strict["results"]] == [1, 4, None]
    # Small values keep everyone: the same summary as without a filter.
    kept = post_summary(server, photos, min_face=int(min(sizes)) - 1, min_score=0.5).json()
    assert kept["summary"] == everyone["summary"] and [r.get("filtered") for r in kept["results"]] == [0, 0, None]
    assert_error(post_summary(server, photos, min_score=2), 422, "invalid_request")


@pytest.mark.parametrize("bands", ["3,2", "teenagers", "0,10", "13,18,250", "1.5", ","])
def test_bad_bands_are_422(server: str, photos: list[tuple[str, bytes]], bands: str) -> None:
    error = assert_error(post_summary(server, photos[:1], bands=bands), 422, "invalid_bands", item="bands")
    assert error["message"].startswith("bands:")
    assert_error(post_results(server, {"results": [{"faces": []}]}, bands=bands), 422, "invalid_bands")
    assert_error(httpx.post(f"{server}/v1/live/sessions", params={"bands": bands}), 422, "invalid_bands")


def test_bad_requests_are_4xx(server: str, photos: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    for interval in ("0", "1", "1.5", "nan", "x"):
        assert_error(post_summary(server, photos[:1], interval=interval), 422, "invalid_request")
    url = f"{server}/v1/summary/results"
    assert_error(httpx.post(url, content=b"{", headers={"content-type": "application/json"}), 422,
                 "invalid_request")
    assert_error(httpx.post(url, content=b"results", headers={"content-type": "text/plain"}), 415,
                 "unsupported_media_type")
    assert_error(post_results(server, {"results": []}), 422, "invalid_request")
    no_distribution = {"results": [{"faces": [{"age": 30, "gender": "male", "gender_probability": 0.9}]}]}
    assert "age_distribution" in assert_error(post_results(server, no_distribution), 422, "invalid_request")["message"]
    past_100 = {"results": [{"path": "a.jpg", "faces": [{"age_distribution": {"start": 100, "p": [0.5, 0.5]}}]}]}
    assert_error(post_results(server, past_100), 422, "invalid_age_distribution", item="a.jpg")
    no_mass = {"results": [{"faces": [{"age_distribution": {"start": 3, "p": [0, 0]}}]}]}
    assert_error(post_results(server, no_mass), 422, "invalid_age_distribution")
    text_number = {"results": [{"faces": [{"age_distribution": {"start": "3", "p": [1]}}]}]}
    assert_error(post_results(server, text_number), 422, "invalid_request")
    assert_error(httpx.post(url, content=b"[" + b" " * (3 * 2**20) + b"]",
                            headers={"content-type": "application/json"}), 413, "upload_too_large")
    monkeypatch.setattr(summary_module, "MAX_SUMMARY_FACES", 3)
    assert_error(post_summary(server, photos), 422, "too_many_faces")


def test_openapi_documents_the_summary(server: str) -> None:
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/v1/summary", "/v1/summary/results", "/v1/live/sessions/{session}/tally"} <= set(paths)
    summary = paths["/v1/summary"]["post"]
    assert {p["name"] for p in summary["parameters"]} >= {"bands", "interval"}
    assert "multipart/form-data" in summary["requestBody"]["content"]
    schema = paths["/v1/summary/results"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(schema) and "age_distribution" in json.dumps(schema)


# -- the live tally ----------------------------------------------------------------------------------------
def track(track_id: int, age: float, gender: str | None, person_id: int | None = None) -> Any:
    return SimpleNamespace(track_id=track_id, age=age, gender=gender, person_id=person_id)


def test_tally_counts_each_person_once() -> None:
    tally = LiveTally(AgeBands.parse("18,65"))
    tally.update(track(1, 30, None), ended=False)  # undecided gender
    tally.update(track(1, 31, "female"), ended=False)  # the same track, now decided
    tally.update(track(2, 70, "male"), ended=False)
    tally.update(track(2, 72, "male"), ended=True)
    out = tally.to_out()
    assert (out.people, out.open, out.counted_by, out.ended) == (2, 1, "track", False)
    assert [(r.band, r.female, r.male, r.unknown) for r in out.rows] == [("0-17", 0, 0, 0), ("18-64", 1, 0, 0),
                                                                          ("65+", 0, 1, 0)]
    # Re-identification: track 3 is counted, then recognised as person 7, who comes back as track 4.
    tally.update(track(3, 10, None), ended=False)
    assert tally.to_out().people == 3
    tally.update(track(3, 10, "male", person_id=7), ended=True)
    tally.update(track(4, 11, "male", person_id=7), ended=False)
    out = tally.to_out()
    assert (out.people, out.counted_by, out.rows[0].male, out.unknown) == (3, "person", 1, 0)
    tally.update(track(5, 40, None), ended=False)  # a false detection, tracked for a while...
    assert tally.to_out().people == 4
    tally.discard(track(5, 40, None))  # ...ends as a glimpse: nobody
    tally.close()
    tally.update(track(9, 40, "male"), ended=False)  # a frame that was in work when the session closed
    final = tally.to_out()
    assert (final.people, final.open, final.ended, final.female, final.male) == (3, 0, True, 1, 2)
    assert tally.people == {}  # folded: an ended tally keeps only its counts


def test_tally_memory_is_bounded() -> None:
    tally = LiveTally(AgeBands())
    for i in range(MAX_PEOPLE + 10):
        tally.update(track(i, 20, "female"), ended=True)
    assert len(tally.people) == MAX_PEOPLE and tally.to_out().people == MAX_PEOPLE + 10


@pytest.fixture(scope="module")
def scene_frames(astronaut: np.ndarray) -> list[bytes]:
    """12 frames (640x480 JPEG) of two faces moving: the astronaut and her mirror image."""
    pytest.importorskip("trackers")
    import cv2

    from facial_demographics.detection import DetectorConfig, FaceDetector
    from facial_demographics.evaluation.scenes import pool_from_crops
    from facial_demographics.evaluation.video_scenes import make_video_scene

    head = cv2.resize(astronaut[30:250, 150:320], (200, 200), interpolation=cv2.INTER_AREA)
    pool = pool_from_crops(["astronaut", "mirrored"], [head, np.ascontiguousarray(head[:, ::-1])],
                           FaceDetector(DetectorConfig.single_scale()))
    scene = make_video_scene(pool, 5, seconds=1, fps=12, occlusions=False)
    return [encode_jpeg(scene.render(i)[0], quality=80) for i in range(12)]


def test_live_tally_is_in_each_answer_and_outlives_the_session(server: str, scene_frames: list[bytes]) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        opened = client.post("/v1/live/sessions", params={"bands": "report"})
        assert opened.status_code == 201, opened.text
        assert opened.json()["bands"] == ["0-24", "25-49", "50-74", "75-99", "100+"]
        session = opened.json()["session"]
        tallies = []
        # Sent 0.1 s apart: the 12 frames span 1.1 s, over the second a track needs to count as a person
        # (video.people.is_glimpse, the rule video and the live tally share).
        for i, jpeg in enumerate(scene_frames):
            answer = client.post(f"/v1/live/sessions/{session}/frames", params={"t": i / 10}, content=jpeg,
                                 headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == 200, answer.text
            tallies.append(answer.json()["tally"])
        # A track counts once its usable face spans a second (frame 10 on; frame 0 is before tracking): the
        # running tally never holds someone the final one would drop as a glimpse.
        assert [t["people"] for t in tallies[:10]] == [0] * 10
        last = tallies[-1]
        assert (last["people"], last["open"], last["ended"], last["counted_by"]) == (2, 2, False, "track")
        assert sum(r["total"] for r in last["rows"]) == 2 == last["female"] + last["male"] + last["unknown"]
        assert client.get(f"/v1/live/sessions/{session}/tally").json() == last
        assert client.delete(f"/v1/live/sessions/{session}").status_code == 204
        final = client.get(f"/v1/live/sessions/{session}/tally")
        assert final.status_code == 200, final.text
        final_body = final.json()
        assert (final_body["people"], final_body["open"], final_body["ended"]) == (2, 0, True)
        assert final_body["unknown"] == 0  # ended tracks take the plain majority gender
        assert_error(client.delete(f"/v1/live/sessions/{session}"), 404, "no_session")
        assert_error(client.get("/v1/live/sessions/nonesuch/tally"), 404, "no_session")
