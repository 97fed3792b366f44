"""The web app (optional extra `digitlab[app]`): draw a digit and watch the models answer.

A thin Gradio layer over `app_handlers`; binds to 127.0.0.1 by default and makes no external
calls (Gradio's analytics are switched off before it is imported).
"""

from __future__ import annotations

import base64
import errno
import html
import io
import os
import socket
import tempfile
from pathlib import Path

import numpy as np

from digitlab import app_handlers as h
from digitlab.errors import ConfigError


def _gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio as gr  # the optional extra `app`, imported only to serve
    except ImportError:
        raise ImportError(
            "the web app needs the optional extra: pip install 'digitlab[app]'"
        ) from None
    return gr


# One colour convention everywhere, the report's: black ink on white paper. MNIST stores ink as
# 255, so every 28x28 is shown as 255 - image.
def paper(image: np.ndarray, scale: int = 1) -> np.ndarray:
    """uint8 (28, 28) ink image -> uint8 (28*scale, 28*scale) black-on-white, pixels kept sharp.

    Enlarged by whole pixels (nearest neighbour), so no browser blur; small enough to send fast.
    """
    out = 255 - np.asarray(image, np.uint8)
    return np.kron(out, np.ones((scale, scale), np.uint8)) if scale > 1 else out


def png_data_uri(image: np.ndarray) -> str:
    """uint8 (28, 28) ink image -> "data:image/png;base64,..." of it black-on-white (~300 bytes).

    The Draw answer carries its pictures inline: an image or gallery component would make Gradio
    encode each picture to WebP, hash it, write it to its cache folder, and the browser fetch
    each file back with one more HTTP request; for a class drawing at once that was most of the
    server's work per answer (profiled with py-spy, see the README). The browser enlarges the
    28 pixels itself (CSS `image-rendering: pixelated`), so only 28x28 travel.
    """
    from PIL import Image  # Pillow comes with Gradio (and scikit-image)

    buf = io.BytesIO()
    Image.fromarray(paper(image)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def seen_html(image: np.ndarray | None, size: int = 168) -> str:
    """The 28x28 the models read, as an <img> enlarged to `size` CSS pixels ("" when None)."""
    if image is None:
        return ""
    return (
        f'<img src="{png_data_uri(image)}" width="{size}" height="{size}" '
        'alt="the 28x28 image the models read">'
    )


def neighbours_html(neighbours, size: int = 84) -> str:
    """The kNN's nearest training images, each with its "label · distance" caption below it.

    `neighbours`: [(uint8 (28, 28), label int, distance float), ...]; "" when empty.
    """
    cells = "".join(
        f'<figure><img src="{png_data_uri(img)}" width="{size}" height="{size}" '
        f'alt="training image of a {lab}"><figcaption>{html.escape(f"{lab} · dist {d:.0f}")}'
        "</figcaption></figure>"
        for img, lab, d in neighbours
    )
    return f'<div class="strip">{cells}</div>' if cells else ""


CSS = """
/* 28x28 pictures are enlarged by the browser too: keep their pixels square, never blurred. */
#seen img, #neighbours img, #generated img, #browse img { image-rendering: pixelated; }
#neighbours img, #browse img, #generated img { object-fit: contain; }
#seen img, #neighbours img { border: 1px solid #ccc; display: block; }
#neighbours .strip { display: flex; gap: .75rem; flex-wrap: wrap; }
#neighbours figure { margin: 0; text-align: center; }
#neighbours figcaption { font-size: .9rem; margin-top: .2rem; }
/* The brush preview circle follows the pointer: keep it (and the strokes) inside the canvas. */
#pad canvas, #pad .pixi-target, #pad [class*="canvas"] { overflow: hidden; }
#pad { overflow: hidden; touch-action: none; }
#draw-hint { margin: 0 0 .4rem; }
@media (max-width: 640px) {
  /* On a phone the hint sits above the canvas, never under its toolbar. */
  #draw-hint { font-size: .95rem; }
}
"""

# Start with the pen in hand: click the Sketchpad's brush tool once the page has drawn it, and
# again after the canvas is cleared (clearing drops the tool).
JS = """
() => {
  const pick = (tries) => {
    const brush = document.querySelector("#pad button[aria-label='Brush']");
    if (brush) { brush.click(); return; }
    if (tries < 100) setTimeout(() => pick(tries + 1), 100);
  };
  pick(0);
  document.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("#pad button");
    if (b && /clear/i.test(b.getAttribute("aria-label") || "")) setTimeout(() => pick(0), 200);
  }, true);
}
"""

# How many Draw requests Gradio works on at once (the rest wait in its queue, in order).
# Letting all 40 of a class in at once shares the two cores among them, so every answer comes
# at the end (median = slowest); a few at a time answers the first ones first and lowers the
# median, while the batcher still gets company for each CNN/kNN pass. Measured in
# benchmarks/bench_app.py; see the README.
DRAW_CONCURRENCY = 8


# The digit choices as text: the API schema Gradio writes for a dropdown is a string enum
# (the tester saw Literal['0', ..., '9'] for a dropdown of ints, and '3' was refused).
DIGITS = list(h.DIGIT_CHOICES)

# The Generate, Morph and Explore events run with preprocess=False: their values reach our
# handlers as sent, and `app_handlers.ui_whole` checks each. Gradio's own checks came first
# otherwise: a Number of precision 0 rounded a seed of 1.5 to 2 (so a fractional seed drew
# images), a Slider refused a value out of its range and a Dropdown one not among its
# choices (an int 3 once the choices are text), each with a gr.Error whose traceback went to
# the server's log, where our handlers answer with a message in the page.
AS_SENT = {"preprocess": False}


DRAW_HINT = "**Draw one digit** in the box below with your mouse or finger (the pen is ready)."


def build(models: h.Models):
    """The Gradio Blocks app for `models` (not launched).

    Morph's GIFs go to a scratch folder the demo owns (`demo.digitlab_scratch`, a
    TemporaryDirectory): `serve` removes it when the server stops; for a demo that is never
    served, or served without blocking, its finalizer removes it when the demo is collected
    or Python exits. (A bare mkdtemp left one empty folder in /tmp per start.)
    """
    gr = _gradio()
    scratch = tempfile.TemporaryDirectory(prefix="digitlab-app-")
    gif_dir = Path(scratch.name)

    def on_draw(image):
        r = h.classify(models, image)
        if r["seen"] is None:
            # The message once, in the status line; every other output is cleared.
            return "", None, "", "", r["message"]
        knn = r["knn"]
        vote = (
            (
                f"kNN (k=3) votes **{knn['vote']}** — its three nearest training images "
                f"(label · distance): {', '.join(str(n[1]) for n in knn['neighbours'])}"
            )
            if knn
            else "kNN unavailable (no dataset loaded)."
        )
        top = max(r["cnn"], key=r["cnn"].get) if r["cnn"] else None
        status = f"The CNN reads a {top}." if top is not None else "CNN unavailable."
        return (
            seen_html(r["seen"]),
            r["cnn"],
            vote,
            neighbours_html(knn["neighbours"] if knn else []),
            status,
        )

    def on_generate(digit, count, seed):
        images, message = h.generate_digits(models, digit, count, seed)
        if images is None:
            return [], message
        return [(paper(img, 2), str(digit).strip()) for img in images], message

    def on_morph(start, end, steps):
        path, message = h.morph(models, start, end, steps, gif_dir)
        return (str(path) if path else None), message

    def on_browse(digit, seed, page):
        images, message = h.browse(models, digit, seed=seed, page=page)
        shown = (
            [(paper(img, 2), str(digit).strip()) for img in images] if images is not None else []
        )
        return shown, message, seed, page

    with gr.Blocks(title="digitlab") as demo:
        gr.Markdown("# digitlab — draw a digit\n" + "\n".join(f"- {n}" for n in models.notes))
        with gr.Tab("Draw"):
            with gr.Row():
                with gr.Column():
                    gr.Markdown(DRAW_HINT, elem_id="draw-hint")
                    pad = gr.Sketchpad(
                        label="Your digit",
                        show_label=False,
                        type="numpy",
                        image_mode="RGBA",
                        canvas_size=(280, 280),
                        fixed_canvas=True,
                        layers=False,
                        transforms=(),
                        elem_id="pad",
                        brush=gr.Brush(default_size=12, colors=["#000000"], color_mode="fixed"),
                    )
                    # A plain file box: every upload, image or not, reaches our handler intact
                    # (an image component would convert RGBA to RGB, or fail on a non-image
                    # before the handler could say what is wrong).
                    upload = gr.File(
                        label="…or upload a picture of a digit (PNG, JPEG, …)",
                        type="filepath",
                        file_count="single",
                        elem_id="upload",
                    )
                with gr.Column():
                    status = gr.Markdown(elem_id="status")
                    gr.Markdown("What the models see (28x28):")
                    # Inline pictures (see png_data_uri): no files, no extra requests.
                    seen = gr.HTML(elem_id="seen", js_on_load=None)
                    probs = gr.Label(label="CNN probabilities", num_top_classes=10, elem_id="probs")
                    vote = gr.Markdown(elem_id="vote")
                    neighbours = gr.HTML(elem_id="neighbours", js_on_load=None)
            outputs = [seen, probs, vote, neighbours, status]
            # Many learners draw at once: a few requests at a time enter the handler (see
            # DRAW_CONCURRENCY) and the batcher answers those waiting together.
            pad.change(
                on_draw,
                pad,
                outputs,
                trigger_mode="always_last",
                api_name="classify",
                concurrency_limit=DRAW_CONCURRENCY,
            )
            upload.upload(
                on_draw,
                upload,
                outputs,
                api_name="classify_upload",
                concurrency_limit=DRAW_CONCURRENCY,
            )
        with gr.Tab("Generate"):
            with gr.Row():
                digit = gr.Dropdown(DIGITS, value="3", label="digit")
                count = gr.Slider(*h.GENERATE_COUNT, value=8, step=1, precision=0, label="count")
                seed = gr.Number(0, precision=0, label="seed (a whole number, 0 or more)")
            go = gr.Button("Generate", elem_id="generate")
            grid = gr.Gallery(
                label="Generated",
                columns=8,
                height="auto",
                object_fit="contain",
                elem_id="generated",
            )
            gen_msg = gr.Markdown(elem_id="gen-msg")
            go.click(on_generate, [digit, count, seed], [grid, gen_msg], **AS_SENT)
        with gr.Tab("Morph"):
            with gr.Row():
                start = gr.Dropdown(DIGITS, value="2", label="from")
                end = gr.Dropdown(DIGITS, value="6", label="to")
                steps = gr.Slider(*h.MORPH_STEPS, value=9, step=1, precision=0, label="steps")
            mgo = gr.Button("Morph", elem_id="morph")
            anim = gr.Image(label="Interpolation", elem_id="anim", buttons=[])
            morph_msg = gr.Markdown()
            mgo.click(on_morph, [start, end, steps], [anim, morph_msg], **AS_SENT)
        with gr.Tab("Explore"):
            with gr.Row():
                bdigit = gr.Dropdown(DIGITS, value="6", label="digit")
                bgo = gr.Button("Show training images", elem_id="browse-show")
                bshuffle = gr.Button("Shuffle", elem_id="browse-shuffle")
                bnext = gr.Button("Next page →", elem_id="browse-next")
            bseed, bpage = gr.State(0), gr.State(0)
            bgrid = gr.Gallery(
                columns=8, height="auto", object_fit="contain", elem_id="browse", show_label=False
            )
            bmsg = gr.Markdown(elem_id="browse-msg")
            browse_out = [bgrid, bmsg, bseed, bpage]
            first, after = [bdigit, bseed], [bdigit, bseed, bpage]
            bgo.click(lambda d, s: on_browse(d, s, 0), first, browse_out, **AS_SENT)
            bdigit.change(lambda d, s: on_browse(d, s, 0), first, browse_out, **AS_SENT)
            bnext.click(lambda d, s, p: on_browse(d, s, p + 1), after, browse_out, **AS_SENT)
            bshuffle.click(
                lambda d, s: on_browse(d, (s + 1) % 1_000_000, 0), first, browse_out, **AS_SENT
            )
            figures = h.run_figures(models)
            if figures:
                gr.Gallery(
                    [(str(p), c) for p, c in figures], label="From the run folder", columns=2
                )
            else:
                gr.Markdown(
                    "Start the app with `--run RUN_DIR` to see a run's confusion "
                    "matrices and misclassified digits here."
                )
    demo.queue(default_concurrency_limit=2, max_size=256)
    demo.digitlab_scratch = scratch
    return demo


def check_address(host: str, port: int) -> None:
    """ConfigError, in words for a command-line user, unless a server can bind (host, port).

    Gradio's own errors for these said "Name or service not known" on one line and "Cannot
    find empty port in range: 7871-7871 ... GRADIO_SERVER_PORT ..." on the next, for a bad
    host and a busy port alike. A plain socket is bound the way the web server binds (every
    address the host names, SO_REUSEADDR as uvicorn sets it, so a port a stopped app left in
    TIME_WAIT still counts as free) and closed again at once; a port taken between this check
    and the launch still gets Gradio's error.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        # socket.bind raised OverflowError for these, after the app had said where it runs.
        raise ConfigError(f"--port must be a whole number in 1..65535, got {port!r}")
    if not host.strip():  # an unset shell variable; Gradio bound 127.0.0.1 for it unasked
        raise ConfigError("--host is empty; give an address to bind, such as 127.0.0.1")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
    try:
        addresses = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise ConfigError(f"cannot bind to {host}: {_lower(reason)}; check --host") from None
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as exc:
                raise ConfigError(_bind_problem(host, port, exc)) from None


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    """One line for a failed bind of (host, port), saying which option to change."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; choose another --port"
    if exc.errno == errno.EACCES:
        return (
            f"cannot bind to port {port} on {host}: permission denied (ports below 1024 need "
            "administrator rights); choose another --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot bind to {host}: no network interface of this machine has that address; "
            "check --host"
        )
    return f"cannot bind to {host} port {port}: {_lower(exc.strerror or str(exc))}"


def _lower(text: str) -> str:
    """An OS message ("Name or service not known") as the middle of our sentence."""
    return text[:1].lower() + text[1:] if text else text


def serve(models: h.Models, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the app for `models` on host:port until interrupted (needs digitlab[app]).

    ConfigError, before anything starts, for a port out of 1..65535, a host that cannot be
    bound, or a port in use (`check_address`). With `block`, returns once the server has
    stopped (Gradio catches the Ctrl-C; the CLI turns SIGTERM into one) and the app's scratch
    folder is gone; without, returns the running demo at once.
    """
    check_address(host, port)
    demo = build(models)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            prevent_thread_lock=not block,
            quiet=True,
            footer_links=[],
            # Each waiting Draw request holds a worker thread while the batcher answers: room
            # for a class of 30-40 drawing at once plus the other tabs.
            max_threads=128,
            css=CSS,
            js=JS,
            allowed_paths=[str(models.run_dir)] if models.run_dir else None,
        )
    except BaseException as exc:
        demo.digitlab_scratch.cleanup()
        # The port was taken after check_address looked: still our words, not Gradio's.
        if isinstance(exc, OSError) and "Cannot find empty port" in str(exc):
            raise ConfigError(f"port {port} on {host} is in use; choose another --port") from None
        raise
    if block:
        demo.digitlab_scratch.cleanup()
    return demo
