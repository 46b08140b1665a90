"""Training code for the shipped demo models (never imported by serving).

- :mod:`scenes`: the caption grammar, renderer and torch-free scorer;
- :mod:`arch`: the demo architecture and SD1 folder saving;
- :mod:`common`: data, schedules and EMA shared by the trainers;
- :mod:`txt2img`, :mod:`inpaint`, :mod:`upscaler`, :mod:`lora`: the trainers;
- :mod:`evaluate`: the evaluators whose figures go in docs/demo-model.md.
"""
