"""Input limits shared by every facade (the API rejects anything outside them)."""

from __future__ import annotations

MIN_SIDE = 64
MAX_SIDE = 2048
SIDE_MULTIPLE = 8
MIN_STEPS = 1
MAX_STEPS = 150
MIN_GUIDANCE = 0.0
MAX_GUIDANCE = 30.0
MIN_IMAGES = 1
MAX_IMAGES = 8
MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.5
DEFAULT_SCHEDULER = "euler_a"

# Editing tasks (img2img, inpaint, upscale).
DEFAULT_IMG2IMG_STRENGTH = 0.75
DEFAULT_INPAINT_STRENGTH = 1.0
MAX_MASK_BLUR = 64
DEFAULT_MASK_BLUR = 4
# The SD x4 upscaler's own ceiling (its max_noise_level) and its usual default.
MAX_NOISE_LEVEL = 350
DEFAULT_NOISE_LEVEL = 20
MAX_WORKFLOW_STEPS = 8
# LCM spreads its steps over the distillation schedule (original_inference_steps).
MAX_LCM_STEPS = 50

# Names only: the engine maps each to a diffusers scheduler class (engine/schedulers.py);
# a test keeps the two in step.
SCHEDULER_NAMES: tuple[str, ...] = (
    "ddim",
    "euler",
    "euler_a",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "unipc",
    "lcm",
    "pndm",
    "heun",
    "lms",
)

# SDXL micro-conditioning sides (original_size, target_size, crop offsets).
MAX_SDXL_COND = 8192
# LoRA adapters per request and their scale (1 = as trained; negative subtracts).
MAX_LORAS = 5
MIN_LORA_SCALE = -4.0
MAX_LORA_SCALE = 4.0
LORA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
