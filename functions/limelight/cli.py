"""`limelight` command line: `anonymize` videos/photos, `detect` faces in images."""

from __future__ import annotations

import json
import logging
import signal
import sys
import functools
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from limelight.detector import AUTO, AUTO_MAX, AUTO_MIN, DEFAULT_THRESHOLD
from limelight.errors import InputError, LimeLightError, OutputError
from limelight.formats import NAME_MAX
from limelight.redact import Mode, RedactOptions, Shape



class DetectSize(click.ParamType):
    """`auto` or a whole number of pixels in 128..4096."""

    name = "PX|auto"

    def convert(self, value, param, ctx):
        if value == AUTO or isinstance(value, int):
            return value
        try:
            px = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither {AUTO!r} nor a number of pixels", param, ctx)
        if not 128 <= px <= 4096:
            self.fail(f"{px} is not in the range 128..4096", param, ctx)
        return px


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While work runs, SIGTERM (kill, `docker stop`, a scheduler's timeout) unwinds like Ctrl-C, so
    the half-written output's temporary file is removed instead of left behind; exit status 143."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(message: str) -> None:
    click.echo(f"limelight: error: {_one_line(message)}", err=True)
    sys.exit(1)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def unexpected(error: BaseException, subject: Path | str | None = None) -> str:
    """The one line for an error LimeLight did not raise on purpose (a library's, a bug): what it
    was, on which file; `--debug` shows the traceback."""
    where = f"{subject}: " if subject is not None else ""
    return _one_line(f"{where}unexpected {type(error).__name__}: {error or 'no message'} (run with --debug for the details)")


class _Boundary(click.Group):
    """Every command ends in its output or in one `limelight: error:` line and a non-zero exit:
    a LimeLightError gives its message, any other exception one line naming it (`--debug` prints
    the traceback too), Ctrl-C exit status 130 and SIGTERM 143 (`_terminate_as_exit`)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("limelight: interrupted", err=True)
            sys.exit(130)
        except LimeLightError as error:
            _fail(str(error))
        except Exception as error:  # the boundary: a traceback is never what a user gets
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            _fail(unexpected(error))


def _guarded(subject: str = "input_path"):
    """A command's body under the boundary: SIGTERM unwinds like Ctrl-C, and an unexpected error
    becomes a LimeLightError naming the command's INPUT (its traceback printed with --debug)."""
    def wrap(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            try:
                with _terminate_as_exit():
                    return command(*args, **kwargs)
            except LimeLightError:
                raise
            except Exception as error:
                if _debug():
                    traceback.print_exc()
                raise LimeLightError(unexpected(error, kwargs.get(subject))) from error
        return run
    return wrap


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("debug"))


@click.group(cls=_Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="limelight")
@click.option("--debug", is_flag=True, envvar="LIMELIGHT_DEBUG", help="Print the traceback of an unexpected error.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """LimeLight: blur every face except those of people who consented."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.showwarning = _warning_line


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's Python warning (Pillow's "Truncated File Read" on a damaged photo's EXIF) as one
    `limelight: warning:` line, not the two raw lines of the warnings module."""
    click.echo(f"limelight: warning: {_one_line(str(message))} ({category.__name__})", err=True)


def _media(folder: Path, recursive: bool, skip: Path | None) -> Iterator[Path]:
    """Video and image files of `folder` (of its sub-folders too when `recursive`), not those under
    `skip` (the output folder) and not hidden ones: `._IMG_0001.MOV` is the resource-fork twin
    macOS leaves beside every file on a camera card, not a video."""
    from limelight.pipeline import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or (skip is not None and path.resolve() == skip):
            continue
        if path.is_dir():
            if recursive:
                yield from _media(path, recursive, skip)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            yield path


def _inputs(src: Path, recursive: bool = False, output: Path | None = None) -> list[Path]:
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    if not src.is_dir() and not src.is_file():
        # A FIFO, device or socket: opening it may block forever (nothing is opened before this).
        raise InputError(f"{src}: not a regular file or folder (a pipe, device or socket); give a video or photo file")
    if src.is_dir():
        if output is not None and output.exists() and not output.is_dir():
            raise OutputError(f"{output}: is a file; with a folder INPUT, -o names the folder to write into")
        skip = _output_folder(src, output).resolve()
        files = list(_media(src, recursive, skip))
        if not files:
            more = "" if recursive or not list(_media(src, True, skip)) else " (its sub-folders do: add --recursive)"
            raise InputError(f"{src}: folder holds no video or image files{more}")
        copies = _anonymized_copies(files)
        if copies:
            click.echo(f"limelight: note: {len(copies)} anonymized cop{'y' if len(copies) == 1 else 'ies'} beside "
                       f"{'its original' if len(copies) == 1 else 'their originals'} skipped ({copies[0].name}"
                       f"{', ...' if len(copies) > 1 else ''})", err=True)
        return [f for f in files if f not in copies]
    return [src]


def _anonymized_copies(files: list[Path]) -> list[Path]:
    """The files that are LimeLight's output of another file beside them: NAME_anonymized.EXT (or
    NAME_ext_anonymized.EXT, the second of two inputs differing by suffix) next to NAME.*. A run
    into the input's own folder, or a folder holding single-file results, would otherwise
    anonymize them again (NAME_anonymized_anonymized.EXT)."""
    names = {(f.parent, f.stem.lower(), f.suffix.lower()) for f in files}
    stems = {(parent, stem) for parent, stem, _ in names}
    copies = []
    for f in files:
        stem = f.stem.lower()
        if not stem.endswith("_anonymized"):
            continue
        base = stem[: -len("_anonymized")]
        name, _, ext = base.rpartition("_")
        if (f.parent, base) in stems or (name and (f.parent, name, f".{ext}") in names):
            copies.append(f)
    return copies


def _skipped_folders(src: Path, output: Path | None) -> list[str]:
    """Sub-folders of a folder INPUT that hold media a run without --recursive does not search."""
    skip = _output_folder(src, output).resolve()
    return [p.name for p in sorted(src.iterdir())
            if p.is_dir() and not p.name.startswith(".") and p.resolve() != skip and next(_media(p, True, skip), None)]


def _output_folder(root: Path, output: Path | None) -> Path:
    return output or root.with_name(f"{root.name}_anonymized")


def _output_for(src: Path, root: Path, output: Path | None) -> Path:
    from limelight.pipeline import default_output

    if root.is_dir():
        folder = _output_folder(root, output) / src.parent.relative_to(root)  # sub-folders mirrored
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{folder}: cannot make the output folder ({error.strerror or error})") from None
        dst = folder / default_output(src).name
    elif output is not None and output.is_dir():  # an existing folder: the default name, in it
        dst = output / default_output(src).name
    else:
        dst = output or default_output(src)
    if len(dst.name.encode()) > NAME_MAX:
        raise OutputError(f"{src}: the output's name would be longer than {NAME_MAX} bytes; give a shorter one with -o")
    return dst


def _engine_options(f):
    """The options `analyze` shares with `anonymize`."""
    f = click.option("--detect-size", type=DetectSize(), default=AUTO, show_default=True,
                     help=f"Long side in pixels the detector sees; auto: {AUTO_MIN} up to 1280-px-wide video, half the long side above, at most {AUTO_MAX}.")(f)
    f = click.option("--threshold", type=click.FloatRange(0.01, 0.99), default=DEFAULT_THRESHOLD, show_default=True,
                     help="Detection score threshold (lower = more recall).")(f)
    return f


def _redact_options(f):
    """The options `render` shares with `anonymize`."""
    for option in reversed([
        click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.BLUR.value, show_default=True),
        click.option("--shape", type=click.Choice([s.value for s in Shape]), default=Shape.ELLIPSE.value, show_default=True),
        click.option("--scale", type=click.FloatRange(1.0, 3.0), default=1.3, show_default=True, help="Redacted area relative to the detected box."),
        click.option("--crf", type=click.IntRange(0, 51), default=18, show_default=True, help="H.264 quality (lower = better)."),
        click.option("--preset", default="veryfast", show_default=True, help="libx264 preset."),
        click.option("--mark-faces", is_flag=True, help="Draw boxes: green = kept (consented), red = blurred."),
        click.option("--full-render", is_flag=True, help="Re-encode every frame; by default the stretches with no face to "
                                                         "redact are copied as they are (H.264 in MP4 / MOV / MKV)."),
    ]):
        f = option(f)
    return f


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--known-faces", type=click.Path(path_type=Path), multiple=True,
              help="Folder of photos of people who consented (one sub-folder per person also works), or one photo "
                   "(the person is named by its file name); repeat for more.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file, or an existing folder to write NAME_anonymized.EXT into (a folder for a folder INPUT). Default: NAME_anonymized.EXT beside the input.")
@_redact_options
@_engine_options
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write a JSON audit report here.")
@click.option("-r", "--recursive", is_flag=True, help="With a folder INPUT, search its sub-folders too (the output folder mirrors them).")
@_guarded()
def anonymize(input_path, known_faces, output, mode, shape, scale, threshold, detect_size, crf, preset, mark_faces, full_render,
              report_path, recursive):
    """Blur every face in INPUT (video, image, or folder of them) except consented ones."""
    _anonymize(input_path, known_faces, output, mode, shape, scale, threshold, detect_size, crf, preset, mark_faces,
               report_path, recursive, full_render)


def _anonymize(input_path, known_faces, output, mode, shape, scale, threshold, detect_size, crf, preset, mark_faces, report_path,
               recursive=False, full_render=False):
    from tqdm import tqdm

    from limelight.detector import Detector, model_metadata
    from limelight.pipeline import IMAGE_SUFFIXES, Anonymizer, is_photo
    from limelight.recognizer import Recognizer, load_gallery
    from limelight.report import check_report_path, write_report
    from limelight.video import audio_codecs, fits_container, probe

    files = _inputs(input_path, recursive, output)
    if input_path.is_dir() and not recursive:
        skipped = _skipped_folders(input_path, output)
        if skipped:
            click.echo(f"limelight: note: sub-folders not searched: {', '.join(skipped)} (add --recursive)", err=True)
    if report_path is not None:
        check_report_path(report_path)
    options = _options(mode, shape, scale, crf, preset, mark_faces, full_render)
    recognizer = Recognizer(load_gallery(*known_faces)) if known_faces else None
    engine = Anonymizer(Detector(detect_size=detect_size, threshold=threshold), recognizer, options)
    reports, failed, started = [], [], time.perf_counter()
    chosen_for_it = input_path.is_dir() or output is None or output.is_dir()  # output containers LimeLight picks
    planned: set[Path] = set()
    for src in files:
        dst = _output_for(src, input_path, output)
        if dst in planned:
            # Two inputs that differ only by suffix (clip.avi and clip.mp4, IMG_1.HEIC and IMG_1.JPG)
            # would publish under one name, the second over the first: name its suffix too.
            dst = dst.with_name(f"{src.stem}_{src.suffix[1:].lower()}_anonymized{dst.suffix}")
        planned.add(dst)
        try:
            if src.suffix.lower() in IMAGE_SUFFIXES or is_photo(src):  # an animated WebP / PNG too: image() passes it on
                if dst.resolve() == src.resolve():
                    raise OutputError(f"{dst}: output would overwrite the input")
                reports.append(engine.image(src, dst))
                continue
            info = probe(src)
            if chosen_for_it and not fits_container(src, dst.suffix):
                # The output's container was LimeLight's choice, yet none takes this sound: the input's
                # problem, so a folder's other files still go on.
                raise InputError(f"{src}: its sound ({', '.join(audio_codecs(src))}) fits none of MP4, Matroska and "
                                 "QuickTime bit-exact; convert the sound first (ffmpeg -i IN -c:v copy -c:a aac OUT.mkv)")
            # Two passes over the frames: analyze, then render.
            with tqdm(total=2 * info.frame_count or None, unit="frame", desc=src.name, disable=None, leave=False) as bar:
                reports.append(engine.video(src, dst, progress=lambda n: bar.update(n - bar.n), info=info))
            damage = reports[-1].damage
            if damage:
                click.echo(f"limelight: warning: {src}: {damage.describe()}", err=True)
        except Exception as e:
            # One file of a folder that fails (truncated, not really a video, an output its container
            # cannot take, or an error of a library) does not stop the batch: its line is printed
            # now, it gets no output, and the run still exits non-zero. KnownFacesError and the
            # like come before the loop; Ctrl-C and SIGTERM stop the whole run.
            if not input_path.is_dir():
                raise  # the command's boundary (`_guarded`) names the file
            message = str(e) if isinstance(e, LimeLightError) else unexpected(e, src)
            if not isinstance(e, LimeLightError) and _debug():
                traceback.print_exc()
            click.echo(f"limelight: error: {_one_line(message)}", err=True)
            failed.append({"input": str(src), "error": _one_line(message)})
    elapsed = time.perf_counter() - started
    if report_path is not None:
        settings = {**options.settings(), "threshold": threshold, "detect_size": detect_size,
                    "known_faces": None if recognizer is None else {"photos": recognizer.gallery.count, "persons": len(recognizer.gallery.persons)}}
        try:
            write_report(report_path, settings, model_metadata(), reports, failed)
        except OutputError as e:
            if not reports:
                raise
            written = "the anonymized file is" if len(reports) == 1 else f"the {len(reports)} anonymized files are"
            raise OutputError(f"{e}; {written} complete") from None
    _summary(reports, failed, elapsed, report_path, consented=None if recognizer is None else recognizer.gallery.persons)
    if failed:
        sys.exit(1)


def _summary(reports, failed: list[dict], elapsed: float, report_path, consented: tuple[str, ...] | None = None) -> None:
    frames = sum(r.frames for r in reports if r.kind == "video")
    faces = sum(r.faces for r in reports)
    kept = sum(r.kept for r in reports)
    for r in reports:
        length = f"{r.frames} frames, " if r.kind == "video" else ""
        shown = f" ({', '.join(r.shown)})" if r.shown else ""
        click.echo(f"{r.output}  ({r.kind}, {length}{r.faces} faces: {r.kept} kept{shown}, {r.faces - r.kept} blurred{_render_note(r.render)})")
    if consented and len(reports) == 1 and reports[0].faces and not reports[0].shown:
        # One file with faces, consent photos given, nobody recognised: most often a photo that does
        # not match (old, sunglasses, another person), which the user should hear of before publishing.
        who = consented[0] if len(consented) == 1 else f"any of the {len(consented)} consented people"
        click.echo(f"limelight: note: {who} not recognised in {reports[0].input}: all its faces are blurred "
                   "(check the --known-faces photos)", err=True)
    done = f"{len(reports)} of {len(reports) + len(failed)} file(s) ({len(failed)} failed, see above)" if failed else f"{len(reports)} file(s)"
    pace = f", {frames} video frames in {elapsed:.1f} s ({frames / max(elapsed, 1e-9):.1f} fps)" if frames else f" in {elapsed:.1f} s"
    click.echo(
        f"done: {done}{pace}; faces {faces}: kept {kept}, blurred {faces - kept}" + (f"; report {report_path}" if report_path else "")
    )


def _render_note(render: dict | None) -> str:
    """How the video was written, for its summary line."""
    if not render:
        return ""
    if render["mode"] == "smart":
        return (f"; {render['seconds_copied']:.1f} s copied as they were, {render['seconds_encoded']:.1f} s re-encoded "
                f"({render['gops_copied']} + {render['gops_encoded']} GOPs)")
    return "" if render["reason"] == "--full-render" else f"; re-encoded whole: {render['reason']}"


def _options(mode, shape, scale, crf, preset, mark_faces, full_render=False):
    """AnonymizeOptions from the options `_redact_options` adds."""
    from limelight.pipeline import AnonymizeOptions
    from limelight.video import EncodeOptions

    try:
        encode = EncodeOptions(crf=crf, preset=preset)
    except ValueError as e:
        raise InputError(f"--preset/--crf: {e}") from None
    return AnonymizeOptions(redact=RedactOptions(Mode(mode), Shape(shape), scale), encode=encode, mark_faces=mark_faces,
                            full_render=full_render)


def _video_input(path: Path) -> Path:
    """`analyze`, `render` and `review` take one video file."""
    from limelight.pipeline import VIDEO_SUFFIXES, is_photo

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (give one video)")
    if is_photo(path) or path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{path}: not a video ({', '.join(sorted(s[1:] for s in VIDEO_SUFFIXES))}); a photo needs no plan: use anonymize")
    return path


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--known-faces", type=click.Path(path_type=Path), multiple=True,
              help="Folder of photos of people who consented, or one photo; repeat for more.")
@click.option("-o", "--output", "plan_path", type=click.Path(path_type=Path), help="Plan file (JSON). Default: NAME.plan.json beside the input.")
@_engine_options
@_guarded()
def analyze(input_path, known_faces, plan_path, threshold, detect_size):
    """Find and decide every face track of a video; write the plan (no video is written).

    Review it (limelight review), change decisions if needed ("show" / "blur" per track, or add
    "regions" to blur), then limelight render."""
    from limelight.detector import Detector
    from limelight.pipeline import Anonymizer
    from limelight.recognizer import Recognizer, load_gallery
    from limelight.video import probe

    src = _video_input(input_path)
    plan_path = plan_path or src.with_name(f"{src.stem}.plan.json")
    if plan_path.is_dir():
        plan_path = plan_path / f"{src.stem}.plan.json"
    if not plan_path.parent.is_dir():
        raise OutputError(f"{plan_path}: folder does not exist")
    recognizer = Recognizer(load_gallery(*known_faces)) if known_faces else None
    engine = Anonymizer(Detector(detect_size=detect_size, threshold=threshold), recognizer)
    plan = engine.analyze(src, probe(src))
    plan.write(plan_path)
    shown = sorted({t.person for t in plan.tracks if t.decision == "show"})
    kept = sum(t.decision == "show" for t in plan.tracks)
    click.echo(f"{plan_path}  ({plan.input['frames']} frames, {len(plan.tracks)} tracks: {kept} shown"
               f"{' (' + ', '.join(shown) + ')' if shown else ''}, {len(plan.tracks) - kept} blurred)")


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--plan", "plan_path", required=True, type=click.Path(path_type=Path), help="The plan from limelight analyze (edited or not).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output video. Default: NAME_anonymized.EXT beside the input.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write a JSON audit report here.")
@_redact_options
@_guarded()
def render(input_path, plan_path, output, report_path, mode, shape, scale, crf, preset, mark_faces, full_render):
    """Write INPUT anonymized as its plan says: every box of a "blur" track and every region blurred,
    no box of a "show" track."""
    from limelight.detector import model_metadata
    from limelight.pipeline import Anonymizer
    from limelight.plan import Plan
    from limelight.report import check_report_path, write_report

    src = _video_input(input_path)
    plan = Plan.load(plan_path)
    plan.check_input(src)
    dst = _output_for(src, src, output)
    if dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: output would overwrite the input")
    if report_path is not None:
        check_report_path(report_path)
    options = _options(mode, shape, scale, crf, preset, mark_faces, full_render)
    started = time.perf_counter()
    report = Anonymizer(None, None, options).render(src, dst, plan)
    if report_path is not None:
        write_report(report_path, {**options.settings(), "plan": str(plan_path)}, model_metadata(), [report])
    _summary([report], [], time.perf_counter() - started, report_path)


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--plan", "plan_path", required=True, type=click.Path(path_type=Path), help="The plan from limelight analyze.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Contact sheet (PNG).")
@_guarded()
def review(input_path, plan_path, output):
    """Draw a contact sheet of a plan: one thumbnail per track (its best face, unblurred: keep the
    sheet private) with its id, decision, name and frames."""
    from limelight.plan import Plan
    from limelight.review import contact_sheet, write_sheet

    src = _video_input(input_path)
    plan = Plan.load(plan_path)
    plan.check_input(src)
    if output.suffix.lower() != ".png":
        raise OutputError(f"{output}: the contact sheet is a PNG; give it a .png name")
    if not output.parent.is_dir():
        raise OutputError(f"{output}: folder does not exist")
    write_sheet(output, contact_sheet(src, plan))
    click.echo(f"{output}  ({len(plan.tracks)} tracks)")


@main.command()
@click.argument("input_path", metavar="VIDEO", type=click.Path(path_type=Path))
@click.option("--known-faces", type=click.Path(path_type=Path), multiple=True,
              help="Folder of photos of people who consented (PERSON.jpg, or PERSON/ folders), or one photo; repeat for more. They go with this job only.")
@click.option("--api", "api_url", envvar="LIMELIGHT_API_URL", metavar="URL",
              help="The job API: what `make api` prints, or a deployed stack's ApiUrl output. Default: $LIMELIGHT_API_URL.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the job and download its result; --no-wait prints the job id once uploaded.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to save the result. Default: NAME_anonymized.EXT beside the video.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Save the job's JSON audit report here too.")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=None, help="How faces are hidden (default: blur).")
@click.option("--shape", type=click.Choice([s.value for s in Shape]), default=None)
@click.option("--scale", type=click.FloatRange(1.0, 3.0), default=None, help="Redacted area relative to the detected box.")
@_guarded()
def submit(input_path, known_faces, api_url, wait, output, report_path, mode, shape, scale):
    """Anonymize VIDEO on the serverless job API: create a job, upload, follow, download."""
    from tqdm import tqdm

    from limelight.recognizer import PHOTO_SUFFIXES
    from limelight.submit import JobClient, consent_photos, download, follow, result_name, upload

    if not api_url:
        raise InputError("give the job API's URL with --api URL or LIMELIGHT_API_URL (make api prints it; a deployed stack's ApiUrl output is one)")
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such file")
    for target in (output, report_path):
        if target is not None and not target.parent.is_dir():
            raise OutputError(f"{target}: folder does not exist")
    photos = consent_photos(list(known_faces), PHOTO_SUFFIXES)
    if known_faces and not photos:
        raise InputError(f"{', '.join(map(str, known_faces))}: no consent photos ({'/'.join(sorted(PHOTO_SUFFIXES))})")
    options = {k: v for k, v in (("mode", mode), ("shape", shape), ("scale", scale)) if v is not None}
    client = JobClient(api_url)
    started = time.perf_counter()
    job = client.create(input_path.name, sorted(photos), options)
    job_id = job["job_id"]
    for name, path in sorted(photos.items()):  # consent first: the video's upload starts the job
        upload(job["upload"]["consent"][name], path)
    size = input_path.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="upload", leave=False, disable=None) as bar:
        upload(job["upload"]["video"], input_path, bar.update)
    if not wait:
        click.echo(f"job {job_id} submitted ({len(photos)} consent photos); follow it: GET {client.url}/jobs/{job_id}")
        return
    with tqdm(total=0, unit="step", desc="analyze + render", leave=False, disable=None) as bar:
        def show(state):  # every segment is analyzed, then rendered: two steps each
            progress = state.get("progress") or {}
            bar.total = max(2 * (progress.get("segments_total") or 0), bar.total or 0)
            bar.n = (progress.get("segments_analyzed") or 0) + (progress.get("segments_done") or 0)
            bar.refresh()
        job = follow(client, job_id, show)
    if job["status"] == "FAILED":
        error = job.get("error") or {}
        raise LimeLightError(f"job {job_id} failed: {error.get('name', 'Unknown')}: {error.get('message', '')}")
    # NAME_anonymized.EXT in the container the workflow published, beside the video or in -o's folder.
    if output is None or output.is_dir():
        target = (output or input_path.parent) / result_name(input_path, job)
    else:
        target = output
    if target.resolve() == input_path.resolve():
        raise OutputError(f"{target}: the output would overwrite the input; give another -o")
    download(job["result"]["video_url"], target)
    if report_path is not None:
        download(job["result"]["report_url"], report_path)
    faces = job.get("faces") or {}
    click.echo(f"{target}  (job {job_id}: {faces.get('kept', 0) + faces.get('blurred', 0)} faces: {faces.get('kept', 0)} kept, "
               f"{faces.get('blurred', 0)} blurred) in {time.perf_counter() - started:.1f} s")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per image.")
@click.option("--detect-size", type=click.IntRange(128, 4096), default=None, help="Long side the detector sees (default: the image's own, up to 1600).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.02, show_default=True)
@_guarded("images")
def detect(images, as_json, detect_size, threshold):
    """Run the shipped int8 detector on IMAGES and print the faces found."""
    from limelight.detector import Detector
    from limelight.pipeline import read_image

    det = Detector(detect_size=detect_size, threshold=threshold)
    for path in images:
        if not path.is_file():
            raise InputError(f"{path}: not a readable image")
        rgb = read_image(path)  # EXIF orientation applied; HEIC too
        faces = det(rgb)
        h, w = rgb.shape[:2]
        if as_json:
            rows = [{"box": [round(float(v), 1) for v in f[:4]], "score": round(float(f[4]), 4)} for f in faces]
            click.echo(json.dumps({"image": str(path), "width": w, "height": h, "faces": rows}))
        else:
            strong = int((faces[:, 4] >= 0.5).sum())
            click.echo(f"{path}: {w}x{h}, {len(faces)} detections above {threshold}, {strong} above 0.5")


if __name__ == "__main__":
    main()
