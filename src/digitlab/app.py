"""The web app (optional extra `digitlab[app]`): draw a digit and watch the models answer.

A thin Gradio layer over `app_handlers`; binds to 127.0.0.1 by default and makes no external
calls (Gradio's analytics are switched off before it is imported).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from digitlab import app_handlers as h


def _gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio as gr  # the optional extra `app`, imported only to serve
    except ImportError:
        raise ImportError(
            "the web app needs the optional extra: pip install 'digitlab[app]'"
        ) from None
    return gr


def build(models: h.Models):
    """The Gradio Blocks app for `models` (not launched)."""
    gr = _gradio()
    gif_dir = Path(tempfile.mkdtemp(prefix="digitlab-app-"))

    def on_draw(image):
        r = h.classify(models, image)
        if r["seen"] is None:
            return None, None, r["message"], [], r["message"]
        knn = r["knn"]
        vote = (
            (
                f"kNN (k=3) votes **{knn['vote']}** — neighbours' labels "
                f"{', '.join(str(n[1]) for n in knn['neighbours'])}"
            )
            if knn
            else "kNN unavailable (no dataset loaded)."
        )
        gallery = [
            (img, f"label {lab} (distance {d:.0f})")
            for img, lab, d in (knn["neighbours"] if knn else [])
        ]
        top = max(r["cnn"], key=r["cnn"].get) if r["cnn"] else None
        status = f"The CNN reads a {top}." if top is not None else "CNN unavailable."
        big = np.kron(r["seen"], np.ones((6, 6), np.uint8))  # 168x168, pixels kept sharp
        return big, r["cnn"], vote, gallery, status

    def on_generate(digit, count, seed):
        images, message = h.generate_digits(models, digit, count, seed)
        return ([(img, f"{digit}") for img in images] if images is not None else []), message

    def on_morph(start, end, steps):
        path, message = h.morph(models, start, end, steps, gif_dir)
        return (str(path) if path else None), message

    def on_browse(digit):
        images, message = h.browse(models, digit)
        return ([(img, str(digit)) for img in images] if images is not None else []), message

    with gr.Blocks(title="digitlab") as demo:
        gr.Markdown("# digitlab — draw a digit\n" + "\n".join(f"- {n}" for n in models.notes))
        with gr.Tab("Draw"):
            with gr.Row():
                with gr.Column():
                    pad = gr.Sketchpad(
                        label="Draw one digit (pick the pen on the left first)",
                        type="numpy",
                        image_mode="RGBA",
                        canvas_size=(280, 280),
                        elem_id="pad",
                        brush=gr.Brush(default_size=12, colors=["#000000"], color_mode="fixed"),
                    )
                    upload = gr.Image(
                        label="…or upload a picture",
                        type="filepath",
                        sources=["upload"],
                        elem_id="upload",
                    )
                with gr.Column():
                    status = gr.Markdown(elem_id="status")
                    seen = gr.Image(label="What the models see (28x28)", height=168, elem_id="seen")
                    probs = gr.Label(label="CNN probabilities", num_top_classes=10, elem_id="probs")
                    vote = gr.Markdown(elem_id="vote")
                    neighbours = gr.Gallery(
                        label="kNN's nearest training images", columns=3, height=180
                    )
            outputs = [seen, probs, vote, neighbours, status]
            pad.change(on_draw, pad, outputs, trigger_mode="always_last")
            upload.change(on_draw, upload, outputs)
        with gr.Tab("Generate"):
            with gr.Row():
                digit = gr.Dropdown(list(range(10)), value=3, label="digit")
                count = gr.Slider(1, 32, value=8, step=1, label="count")
                seed = gr.Number(0, precision=0, label="seed")
            go = gr.Button("Generate", elem_id="generate")
            grid = gr.Gallery(label="Generated", columns=8, elem_id="generated")
            gen_msg = gr.Markdown()
            go.click(on_generate, [digit, count, seed], [grid, gen_msg])
        with gr.Tab("Morph"):
            with gr.Row():
                start = gr.Dropdown(list(range(10)), value=2, label="from")
                end = gr.Dropdown(list(range(10)), value=6, label="to")
                steps = gr.Slider(2, 30, value=9, step=1, label="steps")
            mgo = gr.Button("Morph", elem_id="morph")
            anim = gr.Image(label="Interpolation", elem_id="anim")
            morph_msg = gr.Markdown()
            mgo.click(on_morph, [start, end, steps], [anim, morph_msg])
        with gr.Tab("Explore"):
            bdigit = gr.Dropdown(list(range(10)), value=6, label="digit")
            bgo = gr.Button("Show training images")
            bgrid = gr.Gallery(columns=8, elem_id="browse")
            bmsg = gr.Markdown()
            bgo.click(on_browse, bdigit, [bgrid, bmsg])
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
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def serve(models: h.Models, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the app for `models` on host:port until interrupted (needs digitlab[app])."""
    demo = build(models)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        quiet=True,
        footer_links=[],
        allowed_paths=[str(models.run_dir)] if models.run_dir else None,
    )
    return demo
