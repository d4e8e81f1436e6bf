def build(runtime, session): import gradio as gr; gr.Markdown("(coming)")
