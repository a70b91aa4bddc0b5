"""Behaviour of the consent gallery and the keep/blur identity decision (limelight.recognizer).

Real-data tests read the shared data folder (`data_dir` fixture: ``$LIMELIGHT_DATA``, default
``<repo>/../shared/data``) and skip when it is absent; the synthetic tests always run. Photos are
never copied into the repository: sub-folder layouts are built from symlinks under tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import av
import face_recognition
import cv2
import numpy as np
import pytest
from PIL import Image

from limelight.errors import LimeLightError
from limelight.recognizer import (
    Decision,
    FaceDetector,
    Gallery,
    IdentityVote,
    KnownFacesError,
    PhotoFace,
    Recognizer,
    RecognizerOptions,
    encode_face,
    encode_photo,
    load_gallery,
)

HAMILTON_SINGLES = (
    "alex-lacamoire.png",
    "biden.jpg",
    "lin-manuel-miranda.png",
    "obama.jpg",
    "obama2.jpg",
    "obama_small.jpg",
)
CLIP = "hamilton_white_house_short_clip.mp4"
# Frames of one face track of Lin-Manuel Miranda in the clip where he faces the camera: distances
# to his gallery photo measured 0.32, 0.42, 0.44 (other frames of the track: 0.46-0.53).
LIN_FRAMES = (150, 160, 200)
TOLERANCE = RecognizerOptions().tolerance


# ---------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="module")
def known_faces(data_dir: Path) -> Path:
    folder = data_dir / "videos" / "known_faces"
    if not folder.is_dir():
        pytest.skip(f"known-faces photos not found under {folder} (set LIMELIGHT_DATA)")
    return folder


def linked_folder(root: Path, layout: dict[str, Path]) -> Path:
    """A folder under tmp `root` whose entries (relative names) are symlinks to shared photos."""
    for name, target in layout.items():
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return root


@pytest.fixture(scope="module")
def hamilton_gallery(known_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    source = known_faces / "hamilton_white_house"
    layout = {name: source / name for name in HAMILTON_SINGLES}
    folder = linked_folder(tmp_path_factory.mktemp("hamilton"), layout)
    return load_gallery(folder)


def encoding_of(gallery: Gallery, name: str) -> np.ndarray:
    return gallery.encodings[gallery.names.index(name)]


@pytest.fixture(scope="module")
def lin_track(clip) -> list[np.ndarray]:
    """Encodings of Lin-Manuel Miranda's face in LIN_FRAMES via `encode_face`; the box comes from
    face_recognition's own HOG detector, so the test does not depend on LimeLight's detector."""
    wanted = set(LIN_FRAMES)
    encodings = []
    with av.open(str(clip(CLIP))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index not in wanted:
                continue
            rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
            boxes = face_recognition.face_locations(rgb, number_of_times_to_upsample=1, model="hog")
            top, right, bottom, left = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
            encodings.append(encode_face(rgb, (left, top, right, bottom)))
            if index == max(wanted):
                break
    assert len(encodings) == len(LIN_FRAMES)
    return encodings


def unit(seed: int) -> np.ndarray:
    """A random 128-d direction (synthetic embedding for rule tests)."""
    vector = np.random.default_rng(seed).normal(size=128)
    return vector / np.linalg.norm(vector)


def toward(start: np.ndarray, direction: np.ndarray, distance: float) -> np.ndarray:
    """A point at exactly `distance` from `start`, moved along the unit vector `direction`."""
    return start + distance * direction


def synthetic_recognizer() -> tuple[Recognizer, dict[str, np.ndarray]]:
    """Gallery with two clearly different people, ann and bob, 0.9 apart."""
    ann = unit(1) * 0.5
    bob = ann + 0.9 * unit(2)
    gallery = Gallery(names=("ann", "bob"), encodings=np.stack([ann, bob]))
    return Recognizer(gallery), {"ann": ann, "bob": bob}


# ---------------------------------------------------------------- gallery loading


def test_loose_photos_are_named_by_file_stem(hamilton_gallery: Gallery) -> None:
    # GIVEN a folder of six single-person photos (fixture)
    # THEN each photo gives one 128-d encoding named by its file stem, in file order
    assert hamilton_gallery.names == (
        "alex-lacamoire",
        "biden",
        "lin-manuel-miranda",
        "obama",
        "obama2",
        "obama_small",
    )
    assert hamilton_gallery.sources == HAMILTON_SINGLES
    assert hamilton_gallery.encodings.shape == (6, 128)
    assert hamilton_gallery.encodings.dtype == np.float64
    assert hamilton_gallery.count == 6
    assert len(hamilton_gallery.fingerprint) == 16


def test_two_photos_of_obama_match_and_obama_and_biden_do_not(hamilton_gallery: Gallery) -> None:
    # GIVEN the encodings of two different photos of Obama and one of Biden
    obama, obama2, biden = (encoding_of(hamilton_gallery, n) for n in ("obama", "obama2", "biden"))

    # WHEN a gallery of Obama and Biden (obama.jpg, biden.jpg) matches the other Obama photo
    recognizer = Recognizer(Gallery(names=("obama", "biden"), encodings=np.stack([obama, biden])))
    match = recognizer.match(obama2)

    # THEN it is Obama, well within tolerance, while Obama and Biden are far apart (measured
    # 0.36 and 0.86)
    assert match.name == "obama"
    assert match.distance == pytest.approx(np.linalg.norm(obama - obama2))
    assert match.distance < 0.45
    assert np.linalg.norm(obama - biden) > TOLERANCE + 0.2
    # AND Biden's face is not accepted by an Obama-only gallery
    assert Recognizer(Gallery(names=("obama",), encodings=obama[None])).match(biden).name is None


def test_photo_without_a_face_is_refused_naming_the_file(tmp_path: Path) -> None:
    # GIVEN a consent folder with a smooth gradient picture (no face) next to a noise picture
    ramp = np.linspace(0, 255, 160, dtype=np.uint8)
    across, down = np.meshgrid(ramp, ramp)
    gradient = np.dstack([across, down, 255 - across])
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(gradient).save(tmp_path / "a_gradient.png")
    Image.fromarray(noise).save(tmp_path / "b_noise.png")

    # WHEN the gallery is loaded
    with pytest.raises(KnownFacesError) as raised:
        load_gallery(tmp_path)

    # THEN the first faceless photo is named in a one-line message (never taken as a whole-image
    # face, which the fallbacks for tight crops must not do)
    message = str(raised.value)
    assert "no face found" in message
    assert str(tmp_path / "a_gradient.png") in message
    assert "\n" not in message
    assert isinstance(raised.value, LimeLightError)
    # AND the noise picture is refused on its own too
    with pytest.raises(KnownFacesError, match="b_noise.png"):
        encode_photo(tmp_path / "b_noise.png")


@pytest.mark.parametrize("case", ["empty", "no-photos", "missing"])
def test_folder_without_photos_is_refused_naming_the_folder(tmp_path: Path, case: str) -> None:
    # GIVEN an empty folder, a folder holding only a text file, or no folder at all
    folder = tmp_path / "missing" if case == "missing" else tmp_path
    if case == "no-photos":
        (tmp_path / "notes.txt").write_text("Ann consented")

    # WHEN / THEN loading it raises, naming the folder
    with pytest.raises(KnownFacesError, match="known-faces folder") as raised:
        load_gallery(folder)
    assert str(folder) in str(raised.value)


def test_unreadable_photo_is_refused_naming_it(tmp_path: Path) -> None:
    # GIVEN a .jpg that is not an image
    (tmp_path / "ann.jpg").write_text("not a jpeg")

    # WHEN / THEN loading the gallery raises, naming the file
    with pytest.raises(KnownFacesError, match="cannot read photo") as raised:
        load_gallery(tmp_path)
    assert str(tmp_path / "ann.jpg") in str(raised.value)


def test_folders_and_single_photos_make_one_gallery(known_faces: Path, tmp_path: Path) -> None:
    # GIVEN a folder with Obama's two photos in his sub-folder, and Biden's and Lin's photos given
    # by themselves (Lin's twice)
    source = known_faces / "hamilton_white_house"
    folder = linked_folder(
        tmp_path / "team",
        {"Barack Obama/a.jpg": source / "obama.jpg", "Barack Obama/b.jpg": source / "obama2.jpg"},
    )
    lin = source / "lin-manuel-miranda.png"

    # WHEN one gallery is loaded from all of them
    gallery = load_gallery(folder, source / "biden.jpg", lin, lin)

    # THEN each single photo is one person named by its stem, the folder's as before, the repeated
    # photo read once
    assert gallery.names == ("Barack Obama", "Barack Obama", "biden", "lin-manuel-miranda")
    assert gallery.sources == ("Barack Obama/a.jpg", "Barack Obama/b.jpg", "biden.jpg", "lin-manuel-miranda.png")
    # AND a single photo's encoding is that of the same photo in a folder
    alone = load_gallery(lin)
    assert alone.names == ("lin-manuel-miranda",)
    assert np.allclose(alone.encodings[0], gallery.encodings[3])


def test_a_known_faces_file_that_is_not_a_photo_is_refused_naming_it(tmp_path: Path) -> None:
    notes = tmp_path / "consent.pdf"
    notes.write_bytes(b"%PDF-1.4\n")
    with pytest.raises(KnownFacesError, match="not a .* photo or a folder") as raised:
        load_gallery(notes)
    assert str(notes) in str(raised.value)
    with pytest.raises(KnownFacesError, match="not found") as raised:
        load_gallery(tmp_path / "missing.jpg")
    assert "missing.jpg" in str(raised.value)


def test_person_subfolders_group_photos_under_the_folder_name(
    known_faces: Path, tmp_path: Path
) -> None:
    # GIVEN one sub-folder per person (an upper-case suffix included) and one loose photo
    source = known_faces / "hamilton_white_house"
    folder = linked_folder(
        tmp_path,
        {
            "Barack Obama/official.jpg": source / "obama.jpg",
            "Barack Obama/SECOND.JPG": source / "obama2.jpg",
            "Lin/stage.png": source / "lin-manuel-miranda.png",
            "biden.jpg": source / "biden.jpg",
        },
    )

    # WHEN the gallery is loaded
    gallery = load_gallery(folder)

    # THEN loose photos come first, named by stem, then each sub-folder's photos under its name
    assert gallery.names == ("biden", "Barack Obama", "Barack Obama", "Lin")
    assert gallery.sources == (
        "biden.jpg",
        "Barack Obama/SECOND.JPG",
        "Barack Obama/official.jpg",
        "Lin/stage.png",
    )
    assert gallery.persons == ("Barack Obama", "Lin", "biden")
    # AND the other Obama photo is matched to the person, not to a file
    assert Recognizer(gallery).match(gallery.encodings[1]).name == "Barack Obama"


def test_an_iphone_heic_photo_is_a_known_face_like_its_jpeg(known_faces: Path, hamilton_gallery: Gallery, tmp_path: Path) -> None:
    # GIVEN his photo as an iPhone saves photos: HEIC, turned by its EXIF orientation
    photo = Image.open(known_faces / "hamilton_white_house" / "lin-manuel-miranda.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels are to be turned 90 degrees clockwise
    folder = tmp_path / "known"
    folder.mkdir()
    photo.rotate(90, expand=True).save(folder / "Lin.HEIC", exif=exif.tobytes())

    # WHEN the gallery is loaded
    gallery = load_gallery(folder)

    # THEN the photo is read upright and gives his encoding (that of his PNG, up to HEIC's compression)
    assert gallery.names == ("Lin",)
    assert np.linalg.norm(gallery.encodings[0] - encoding_of(hamilton_gallery, "lin-manuel-miranda")) < 0.1


@pytest.mark.parametrize("name, pillow_format", [("Lin.webp", "WEBP"), ("Lin.avif", "AVIF"), ("Lin.jfif", "JPEG")])
def test_a_web_saved_photo_is_a_known_face_like_its_png(known_faces: Path, hamilton_gallery: Gallery, tmp_path: Path,
                                                        name: str, pillow_format: str) -> None:
    # GIVEN his photo as saved from the web: WebP, AVIF, or a JPEG named .jfif (such folders
    # held "no jpg/png photo")
    folder = tmp_path / "known"
    folder.mkdir()
    Image.open(known_faces / "hamilton_white_house" / "lin-manuel-miranda.png").convert("RGB").save(folder / name, format=pillow_format, quality=95)
    # WHEN the gallery is loaded
    gallery = load_gallery(folder)
    # THEN it gives his encoding, that of his PNG up to the compression
    assert gallery.names == ("Lin",)
    assert np.linalg.norm(gallery.encodings[0] - encoding_of(hamilton_gallery, "lin-manuel-miranda")) < 0.1


def test_empty_person_subfolder_is_refused(tmp_path: Path) -> None:
    # GIVEN a person folder without photos
    (tmp_path / "ann").mkdir()

    # WHEN / THEN loading raises, naming the sub-folder
    with pytest.raises(KnownFacesError, match="person folder") as raised:
        load_gallery(tmp_path)
    assert str(tmp_path / "ann") in str(raised.value)


@pytest.mark.slow
@pytest.mark.parametrize("photo", ["two_people.jpg", "obama_and_biden.jpg"])
def test_group_photo_is_refused(known_faces: Path, photo: str) -> None:
    # GIVEN a photo of Obama and Biden side by side (no face twice the area of the next)
    path = known_faces / "hamilton_white_house" / photo

    # WHEN / THEN it is refused: it would whitelist both people
    with pytest.raises(KnownFacesError, match="none is clearly the main one") as raised:
        encode_photo(path)
    assert str(path) in str(raised.value)


def test_gallery_survives_a_save_load_round_trip(hamilton_gallery: Gallery, tmp_path: Path) -> None:
    # GIVEN a loaded gallery saved to an .npz
    path = hamilton_gallery.save(tmp_path / "gallery.npz")

    # WHEN it is loaded back
    loaded = Gallery.load(path)

    # THEN names, sources, encodings and fingerprint are identical and no temporary file is left
    assert loaded.names == hamilton_gallery.names
    assert loaded.sources == hamilton_gallery.sources
    np.testing.assert_array_equal(loaded.encodings, hamilton_gallery.encodings)
    assert loaded.fingerprint == hamilton_gallery.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.npz"]
    assert not loaded.encodings.flags.writeable


def test_missing_or_foreign_gallery_file_is_refused(tmp_path: Path) -> None:
    # GIVEN no file, and a file that is not a gallery
    (tmp_path / "notes.npz").write_text("hello")

    # WHEN / THEN loading either raises, naming the file
    with pytest.raises(KnownFacesError, match="not found"):
        Gallery.load(tmp_path / "none.npz")
    with pytest.raises(KnownFacesError, match="notes.npz"):
        Gallery.load(tmp_path / "notes.npz")


@pytest.fixture(scope="module")
def friends_faces(known_faces: Path) -> dict[str, PhotoFace]:
    return {path.name: encode_photo(path) for path in sorted((known_faces / "friends").iterdir())}


@pytest.mark.slow
def test_every_friends_photo_loads_large_ones_by_plain_hog(
    friends_faces: dict[str, PhotoFace],
) -> None:
    # GIVEN the six large photos and six tight ~150 px crops of the Friends cast (fixture)
    # THEN each gives an encoding; large photos need no fallback detector
    assert len(friends_faces) == 12
    for name, face in friends_faces.items():
        assert face.encoding.shape == (128,), name
        if ".yakhyo." in name:
            assert face.detector is FaceDetector.HOG, name


@pytest.mark.slow
def test_each_friends_crop_is_nearest_to_the_same_persons_large_photo(
    friends_faces: dict[str, PhotoFace],
) -> None:
    # GIVEN the large photos as references, keyed by lower-case first name
    large = {
        n.split(".")[0].lower(): f.encoding for n, f in friends_faces.items() if ".yakhyo." in n
    }
    crops = {n: f.encoding for n, f in friends_faces.items() if ".simplefr_crop." in n}
    # the crop files spell Rachel "rachael"
    crop_person = {n: n.split("_")[1].split(".")[0].replace("rachael", "rachel") for n in crops}

    # WHEN each crop is compared with every large photo
    nearest = {n: min(large, key=lambda p: np.linalg.norm(large[p] - crops[n])) for n in crops}

    # THEN the nearest is the same person (including crops that needed a fallback detector)
    assert nearest == crop_person


# ---------------------------------------------------------------- faces from the video


def test_his_gallery_photo_keeps_lin_manuel_mirandas_clip_face(
    hamilton_gallery: Gallery, lin_track: list[np.ndarray]
) -> None:
    # GIVEN the Hamilton gallery (Lin-Manuel, Alex Lacamoire, Obama x3, Biden) and his face track
    vote = Recognizer(hamilton_gallery).vote()

    # WHEN every sample of the track is added
    matches = [vote.add(encoding) for encoding in lin_track]

    # THEN every sample matches him and the track is kept under his name
    assert [m.name for m in matches] == ["lin-manuel-miranda"] * len(LIN_FRAMES)
    decision = vote.decision()
    best = min(m.distance for m in matches)
    assert decision == Decision(
        kept=True, name="lin-manuel-miranda", votes=3, matches=3, best_distance=pytest.approx(best)
    )
    assert decision.best_distance < 0.4


@pytest.mark.slow
def test_distractor_gallery_never_keeps_lin_manuel_miranda(
    known_faces: Path, lin_track: list[np.ndarray]
) -> None:
    # GIVEN a gallery of seven people who are not in the clip
    gallery = load_gallery(known_faces / "distractors")
    assert gallery.count == 7
    vote = Recognizer(gallery).vote()

    # WHEN Lin-Manuel Miranda's face track is matched
    matches = [vote.add(encoding) for encoding in lin_track]

    # THEN no sample matches anyone (nearest distractor measured 0.64-0.70): the face stays blurred
    assert [m.name for m in matches] == [None] * len(LIN_FRAMES)
    assert min(m.distance for m in matches) > TOLERANCE + 0.05
    assert vote.decision().kept is False


def test_tiny_face_is_not_encoded() -> None:
    # GIVEN a frame and a face box 15 px wide, and one 40 px wide but mostly outside the frame
    frame = np.zeros((120, 160, 3), np.uint8)

    # WHEN / THEN neither is encoded: too small to recognise, so it stays blurred
    assert encode_face(frame, (10, 10, 25, 40)) is None
    assert encode_face(frame, (150, 10, 190, 60, 0.9)) is None


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_face_in_a_frame_stored_on_its_side_is_cropped_upright(turns: int) -> None:
    from limelight.recognizer import face_crop
    from limelight.video import Frame, coded_boxes

    # GIVEN an upright frame with a face box, and the same frame as a video stores it turned
    rng = np.random.default_rng(turns)
    upright = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = np.array([50.0, 30.0, 90.0, 80.0])
    stored = np.ascontiguousarray(np.rot90(upright, -turns))
    stored_box = coded_boxes(box[None], turns, *stored.shape[:2])[0]
    want_crop, want_location = face_crop(upright, box)
    # THEN the crop taken from the stored frame, told how it is shown, is the upright crop exactly,
    # from an RGB array and from a video frame held in RGB alike
    for frame in (stored, Frame(0, 0, 0.0, rgb=stored)):
        crop, location = face_crop(frame, stored_box, turns=turns)
        assert location == want_location
        np.testing.assert_array_equal(crop, want_crop)


@pytest.mark.parametrize("turns", [0, 1])
def test_a_face_in_anamorphic_pixels_is_cropped_as_shown(turns: int) -> None:
    from limelight.recognizer import face_crop
    from limelight.video import coded_boxes

    # GIVEN a frame as shown, and the same frame as stored: possibly on its side, and squeezed to
    # 3/4 of its stored width (HDV's 1440 x 1080 shown 1920 wide: sample aspect ratio 4:3)
    yy, xx = np.mgrid[0:120, 0:160]
    shown = np.stack([xx * 255 // 160, yy * 255 // 120, (xx + yy) % 256], -1).astype(np.uint8)
    box = np.array([48.0, 32.0, 96.0, 88.0])
    full = np.ascontiguousarray(np.rot90(shown, -turns))
    full_box = coded_boxes(box[None], turns, *full.shape[:2])[0] if turns else box
    stored = cv2.resize(full, (full.shape[1] * 3 // 4, full.shape[0]), interpolation=cv2.INTER_AREA)
    stored_box = full_box * [0.75, 1, 0.75, 1]
    want_crop, want_location = face_crop(shown, box)
    # WHEN the face is cropped from the stored frame, told its sample aspect ratio
    crop, location = face_crop(stored, stored_box, turns=turns, sar=4 / 3)
    # THEN the crop is the shown one, in square pixels (within a pixel of size and place, and of
    # resampling), not a squeezed face for dlib to read
    assert abs(crop.shape[0] - want_crop.shape[0]) <= 2 and abs(crop.shape[1] - want_crop.shape[1]) <= 2
    assert max(abs(a - b) for a, b in zip(location, want_location)) <= 2
    h, w = min(crop.shape[0], want_crop.shape[0]), min(crop.shape[1], want_crop.shape[1])
    assert np.abs(crop[:h, :w].astype(int) - want_crop[:h, :w]).mean() < 4


def test_a_large_face_in_an_interlaced_frame_is_cut_from_one_field() -> None:
    from limelight.recognizer import FIELD_FACE_PX, face_crop
    from limelight.video import Frame

    # GIVEN an interlaced frame whose fields differ (top lines dark, bottom lines bright), and the
    # same picture as a progressive frame
    grey = np.where(np.arange(480)[:, None] % 2 == 0, 40, 200).astype(np.uint8).repeat(640, axis=1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    big = np.array([200.0, 100.0, 300.0, 100.0 + 2 * FIELD_FACE_PX + 20])
    small = np.array([200.0, 100.0, 260.0, 100.0 + FIELD_FACE_PX])
    # WHEN faces are cropped for recognition
    field_crop, field_loc = face_crop(Frame(0, 0, 0.0, rgb=rgb.copy(), interlaced=True), big)
    whole_crop, whole_loc = face_crop(Frame(0, 0, 0.0, rgb=rgb.copy()), big)
    small_crop, _ = face_crop(Frame(0, 0, 0.0, rgb=rgb.copy(), interlaced=True), small)
    # THEN a large face comes from the top field alone, as tall as in the frame; a small one, and
    # any face of a progressive frame, from the whole frame, both fields
    assert np.abs(field_crop.astype(int) - 40).max() <= 2
    assert abs(field_crop.shape[0] - whole_crop.shape[0]) <= 2 and max(abs(a - b) for a, b in zip(field_loc, whole_loc)) <= 2
    assert set(np.unique(whole_crop)) == {40, 200} and set(np.unique(small_crop)) == {40, 200}


# ---------------------------------------------------------------- matching and voting rules


def test_face_within_tolerance_of_one_person_matches_that_person() -> None:
    # GIVEN ann and bob, 0.9 apart
    recognizer, people = synthetic_recognizer()

    # WHEN a face 0.3 from ann is matched
    match = recognizer.match(toward(people["ann"], unit(3), 0.3))

    # THEN it is ann at distance 0.3
    assert match.name == "ann"
    assert match.distance == pytest.approx(0.3)


def test_face_beyond_tolerance_is_no_match_even_if_nearest() -> None:
    # GIVEN ann and bob
    recognizer, people = synthetic_recognizer()

    # WHEN a face 0.58 from ann is matched (within face_recognition's 0.6, outside our 0.55)
    match = recognizer.match(toward(people["ann"], unit(4), 0.58))

    # THEN nobody is matched, and the distance is still reported
    assert match.name is None
    assert match.distance == pytest.approx(0.58)


def test_face_about_as_close_to_two_different_people_is_no_match() -> None:
    # GIVEN ann and bob 0.9 apart, and a face halfway between them: 0.45 from each
    recognizer, people = synthetic_recognizer()
    face = (people["ann"] + people["bob"]) / 2

    # WHEN it is matched
    match = recognizer.match(face)

    # THEN the margin rule refuses it although ann is within tolerance
    assert match.name is None
    assert match.distance == pytest.approx(0.45)


def test_two_names_for_the_same_face_do_not_compete() -> None:
    # GIVEN loose photos obama.jpg and obama2.jpg (0.3 apart: the same face under two names) and bob
    obama = unit(5) * 0.5
    gallery = Gallery(
        names=("obama", "obama2", "bob"),
        encodings=np.stack([obama, toward(obama, unit(6), 0.3), obama + 0.9 * unit(7)]),
    )

    # WHEN a face 0.12 from obama.jpg and 0.18 from obama2.jpg (within the 0.1 margin) is matched
    match = Recognizer(gallery).match(toward(obama, unit(6), 0.12))

    # THEN it is kept as the nearest name: obama2 is no rival, only bob would be
    assert match.name == "obama"


def test_track_without_samples_is_blurred() -> None:
    # GIVEN a vote with no sample (e.g. every sample too small to encode)
    vote = IdentityVote(synthetic_recognizer()[0])

    # THEN the face is blurred
    assert vote.decision() == Decision(
        kept=False, name=None, votes=0, matches=0, best_distance=None
    )


def test_track_with_votes_split_between_two_people_is_blurred() -> None:
    # GIVEN a track whose samples confidently match ann twice and bob twice
    recognizer, people = synthetic_recognizer()
    vote = recognizer.vote()
    for seed, person in [(10, "ann"), (11, "bob"), (12, "ann"), (13, "bob")]:
        vote.add(toward(people[person], unit(seed), 0.3))

    # THEN there is no majority and the face is blurred, unnamed
    decision = vote.decision()
    assert (decision.kept, decision.name, decision.votes, decision.matches) == (False, None, 4, 2)


def test_track_with_half_its_samples_unmatched_is_blurred() -> None:
    # GIVEN a track with one confident ann sample and one sample matching nobody
    recognizer, people = synthetic_recognizer()
    vote = recognizer.vote()
    vote.add(toward(people["ann"], unit(14), 0.3))
    vote.add(toward(people["ann"], unit(15), 0.7))

    # THEN one match out of two samples is no majority: blurred
    assert vote.decision().kept is False


def test_track_mostly_matching_one_person_is_kept_with_the_name() -> None:
    # GIVEN a track with three samples matching ann (0.2, 0.3, 0.4) and one matching nobody
    recognizer, people = synthetic_recognizer()
    vote = recognizer.vote()
    for seed, distance in [(16, 0.3), (17, 0.2), (18, 0.7), (19, 0.4)]:
        vote.add(toward(people["ann"], unit(seed), distance))

    # THEN the face is kept as ann, with the best of her matching distances
    assert vote.decision() == Decision(
        kept=True, name="ann", votes=4, matches=3, best_distance=pytest.approx(0.2)
    )


def test_min_matches_option_requires_more_evidence() -> None:
    # GIVEN a recognizer requiring two matching samples, and a track with a single confident match
    default, people = synthetic_recognizer()
    vote = Recognizer(default.gallery, RecognizerOptions(min_matches=2)).vote()
    vote.add(toward(people["ann"], unit(20), 0.2))

    # THEN the face stays blurred
    assert vote.decision().kept is False


def test_empty_gallery_matches_nobody() -> None:
    # GIVEN nobody consented
    recognizer = Recognizer(Gallery(names=(), encodings=np.empty((0, 128))))

    # THEN any face is unmatched
    assert recognizer.match(unit(21)) == (None, float("inf"))
