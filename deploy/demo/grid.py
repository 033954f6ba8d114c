"""Run with: make demo-grid   (or: .venv/bin/python deploy/demo/grid.py, after `cargo build --release -p rapid-scheduler`)

Runs the embedded default on the README's example requests (a fashion design request and two menus,
one written in Chinese) and lays the marked images it prints out in one picture with their prompts:
deploy/demo/grid.png, the grid the README shows. Needs Pillow (in .venv, from deploy/setup.sh).
"""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "rapid-scheduler"
REQUESTS = [
    ("examples/fashion-design.json", "/v1/fashion/designs"),
    ("examples/cuisine-menu.json", "/v1/cuisine/menus"),
    ("examples/cuisine-menu-zh.json", "/v1/cuisine/menus"),
]
TILE = 256
LABEL = 44


def run(request: str, endpoint: str) -> list[tuple[str, Path]]:
    """(prompt, image path) of every image the standalone run printed, in job order."""
    done = subprocess.run(
        [str(BINARY), "standalone", "--config", "deploy/standalone.toml", "--listen", "127.0.0.1:0",
         "--submit", request, "--endpoint", endpoint],
        cwd=ROOT, capture_output=True, text=True,
    )
    if done.returncode != 0:
        sys.exit(f"error: {request}: the standalone run failed:\n{done.stderr}")
    prompts = [line.split("prompt: ", 1)[1] for line in done.stderr.splitlines() if "  prompt: " in line]
    paths = [ROOT / line for line in done.stdout.split()]
    images_per_prompt = max(1, len(paths) // max(1, len(prompts)))
    return [(prompts[i // images_per_prompt], path) for i, path in enumerate(paths)]


def font(size: int):
    # A CJK font for the Chinese menu's prompts (Debian: fonts-wqy-microhei); DejaVu draws English only.
    for candidate in ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
                      "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
                      "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default()


def wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for char in text:
        line += char
        if len(line) >= width and (char == " " or not char.isascii()):
            lines.append(line.strip())
            line = ""
    return (lines + [line.strip()])[:3]


def main() -> None:
    if not BINARY.exists():
        sys.exit(f"error: {BINARY}: missing; run `cargo build --release -p rapid-scheduler` first")
    rows = [run(request, endpoint) for request, endpoint in REQUESTS]
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (columns * TILE, len(rows) * (TILE + LABEL)), "white")
    draw = ImageDraw.Draw(grid)
    small = font(11)
    for r, row in enumerate(rows):
        for c, (prompt, path) in enumerate(row):
            x, y = c * TILE, r * (TILE + LABEL)
            grid.paste(Image.open(path).convert("RGB").resize((TILE, TILE)), (x, y))
            for i, line in enumerate(wrap(prompt, 40)):
                draw.text((x + 4, y + TILE + 2 + i * 13), line, fill="black", font=small)
    out = ROOT / "deploy" / "demo" / "grid.png"
    grid.save(out)
    print(json.dumps({"grid": str(out.relative_to(ROOT)), "images": sum(len(row) for row in rows)}))


if __name__ == "__main__":
    main()
