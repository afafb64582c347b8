"""Draws a training run's loss curve as SVG, with no dependencies.

    python3 scripts/plot-loss.py METRICS.jsonl SUMMARY.json OUT.svg [TITLE] [TERM] [REFERENCE]

Training loss per step comes from the metrics file (one JSON object per step);
validation loss from the summary's "validation" list. TERM picks another loss term of both
(BERT's mlm_loss, default loss); REFERENCE is where the dashed line is drawn (default 2.2).
"""
import json
import sys


def main(metrics_path, summary_path, out_path, title="training loss", term="loss", reference="2.2"):
    steps, losses = [], []
    with open(metrics_path) as f:
        for line in f:
            record = json.loads(line)
            steps.append(record["step"])
            losses.append(record[term])
    with open(summary_path) as f:
        validation = [dict(v, loss=v[term]) for v in json.load(f).get("validation", [])]
    width, height, left, right, top, bottom = 720, 420, 60, 20, 40, 50
    x_max = max(steps)
    y_min = min(min(losses), min((v["loss"] for v in validation), default=9)) - 0.1
    y_max = max(losses[min(5, len(losses) - 1):] + [v["loss"] for v in validation]) + 0.1

    def x(step):
        return left + (width - left - right) * step / x_max

    def y(loss):
        loss = min(max(loss, y_min), y_max)
        return top + (height - top - bottom) * (y_max - loss) / (y_max - y_min)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>']
    tick = 0.5 if y_max - y_min > 2 else 0.25
    value = round(y_min / tick) * tick
    while value <= y_max:
        if value >= y_min:
            parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.2f}</text>')
        value += tick
    for i in range(0, 6):
        step = x_max * i / 5
        parts.append(f'<text x="{x(step):.1f}" y="{height - bottom + 18}" text-anchor="middle">{int(step)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">optimizer step</text>')
    parts.append(f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" transform="rotate(-90 14 {(top + height - bottom) / 2})">nats per byte</text>')
    points = " ".join(f"{x(s):.1f},{y(l):.1f}" for s, l in zip(steps, losses))
    parts.append(f'<polyline points="{points}" fill="none" stroke="#4a7ebb" stroke-width="1"/>')
    if validation:
        points = " ".join(f'{x(v["step"]):.1f},{y(v["loss"]):.1f}' for v in validation)
        parts.append(f'<polyline points="{points}" fill="none" stroke="#d9534f" stroke-width="2"/>')
        for v in validation:
            parts.append(f'<circle cx="{x(v["step"]):.1f}" cy="{y(v["loss"]):.1f}" r="3" fill="#d9534f"/>')
    target = float(reference)
    if y_min < target < y_max:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(target):.1f}" y2="{y(target):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{width - right - 4}" y="{y(target) - 4:.1f}" text-anchor="end" fill="#666">{reference}</text>')
    parts.append(f'<text x="{width - right - 4}" y="{top + 14}" text-anchor="end" fill="#4a7ebb">training loss (per step)</text>')
    parts.append(f'<text x="{width - right - 4}" y="{top + 30}" text-anchor="end" fill="#d9534f">validation loss (held-out 5%)</text>')
    parts.append("</svg>")
    with open(out_path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
