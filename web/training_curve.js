// RewardDance frontend extension: a live reward curve inside the Reward LoRA Trainer node. After every training step
// the node (nodes/rl_training.py: live_progress) sends a "rewarddance.training" message {node, step, total,
// reward_mean, reward_std, window_std} (numbers the step lacks are null; a run's first message also carries
// `earlier`: the points of the steps a resumed run already logged). The curve is a DOM widget (a label and a canvas)
// added on the first message: the node grows to fit it, so nothing is drawn over its neighbours. It draws the mean
// reward against the step with a band of one std around it, and labels the last value with format.js's formatScore.
// The points live on the node only: neither saved with the workflow nor sent to the backend.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { formatScore } from "./format.js";

const TRAINER = "RewardDanceLoraTrainer";
const EVENT = "rewarddance.training";
const CURVE_WIDGET = "rewarddance_curve";
const CURVE_HEIGHT = 170;
const LABEL_HEIGHT = 18;
const WIDGET_MARGIN = 4;
const PLOT_PAD = { left: 52, right: 10, top: 8, bottom: 18 };

// A message's own point of the curve.
function pointOf(message) {
  return {
    step: message.step,
    reward_mean: message.reward_mean ?? null,
    reward_std: message.reward_std ?? null,
    window_std: message.window_std ?? null,
  };
}

// The curve after a message: a run's first message (it has `earlier`) starts the curve from the steps it lists, a
// later step continues it, and a step at or before the last one (a run started again without its first message
// reaching this page) starts it over.
export function nextPoints(points, message) {
  const point = pointOf(message);
  if (Array.isArray(message.earlier)) return [...message.earlier.map(pointOf), point];
  const last = points[points.length - 1];
  return last && point.step > last.step ? [...points, point] : [point];
}

// The label above the curve: the last step and its reward as the previews and summaries write numbers.
export function curveLabel(points, total) {
  const last = points[points.length - 1];
  if (!last) return "";
  const std = last.reward_std === null ? "" : `  std ${formatScore(last.reward_std)}`;
  const reward = last.reward_mean === null ? "no reward" : `reward ${formatScore(last.reward_mean)}`;
  return `step ${last.step}/${total}  ${reward}${std}`;
}

// The reward range the plot shows: every mean with its std band, padded a little (never an empty range).
function valueRange(points) {
  const lows = points.map((p) => p.reward_mean - (p.reward_std ?? 0));
  const highs = points.map((p) => p.reward_mean + (p.reward_std ?? 0));
  const lo = Math.min(...lows);
  const hi = Math.max(...highs);
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  return [lo - pad, hi + pad];
}

// Draw the std band, the mean line and its last point on the widget's canvas, sized to its element.
function drawCurve(canvas, points, total) {
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const shown = points.filter((p) => p.reward_mean !== null);
  if (!shown.length) return;
  const [lo, hi] = valueRange(shown);
  const first = Math.min(1, shown[0].step);
  const lastStep = Math.max(total, shown[shown.length - 1].step);
  const plotW = width - PLOT_PAD.left - PLOT_PAD.right;
  const plotH = height - PLOT_PAD.top - PLOT_PAD.bottom;
  const x = (step) => PLOT_PAD.left + ((step - first) / (lastStep - first || 1)) * plotW;
  const y = (value) => PLOT_PAD.top + ((hi - value) / (hi - lo)) * plotH;

  ctx.strokeStyle = "#3b434c";
  ctx.strokeRect(PLOT_PAD.left, PLOT_PAD.top, plotW, plotH);
  ctx.fillStyle = "#9aa4ae";
  ctx.font = "10px monospace";
  ctx.textAlign = "right";
  ctx.fillText(formatScore(hi), PLOT_PAD.left - 4, PLOT_PAD.top + 8);
  ctx.fillText(formatScore(lo), PLOT_PAD.left - 4, PLOT_PAD.top + plotH);
  ctx.textAlign = "left";
  ctx.fillText(`step ${first}`, PLOT_PAD.left, height - 4);
  ctx.textAlign = "right";
  ctx.fillText(`${lastStep}`, PLOT_PAD.left + plotW, height - 4);

  const banded = shown.filter((p) => p.reward_std !== null);
  if (banded.length) {
    ctx.fillStyle = "rgba(88, 166, 255, 0.25)";
    ctx.beginPath();
    banded.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(p.step), y(p.reward_mean + p.reward_std)));
    [...banded].reverse().forEach((p) => ctx.lineTo(x(p.step), y(p.reward_mean - p.reward_std)));
    ctx.closePath();
    ctx.fill();
  }
  ctx.strokeStyle = "#58a6ff";
  ctx.lineWidth = 2;
  ctx.beginPath();
  shown.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(p.step), y(p.reward_mean)));
  ctx.stroke();
  const last = shown[shown.length - 1];
  ctx.fillStyle = "#7ee787";
  ctx.beginPath();
  ctx.arc(x(last.step), y(last.reward_mean), 3, 0, 2 * Math.PI);
  ctx.fill();
}

// The node's curve widget, added on its first message; not saved with the workflow nor sent to the backend.
function curveWidget(node) {
  const existing = node.widgets?.find((w) => w.name === CURVE_WIDGET);
  if (existing) return existing;
  const element = document.createElement("div");
  element.className = "rewarddance-curve";
  element.style.cssText =
    "display: flex; flex-direction: column; box-sizing: border-box; padding: 2px 6px 4px;" +
    "background: rgba(0, 0, 0, 0.72); color: #e6edf3; border-radius: 6px; overflow: hidden;";
  const label = document.createElement("div");
  label.className = "rewarddance-curve-label";
  label.style.cssText = `font: 12px monospace; line-height: ${LABEL_HEIGHT}px; height: ${LABEL_HEIGHT}px;` +
    "white-space: pre; color: #7ee787; overflow: hidden;";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "flex: 1; min-height: 0; width: 100%; display: block;";
  element.append(label, canvas);
  element.rewarddancePoints = [];
  element.rewarddanceTotal = 0;
  new ResizeObserver(() => drawCurve(canvas, element.rewarddancePoints, element.rewarddanceTotal)).observe(canvas);
  const widget = node.addDOMWidget(CURVE_WIDGET, "rewarddance_curve", element, {
    serialize: false,
    hideOnZoom: false,
    margin: WIDGET_MARGIN,
    getMinHeight: () => CURVE_HEIGHT,
    getMaxHeight: () => CURVE_HEIGHT,
  });
  widget.serialize = false;
  return widget;
}

// Take one message into the node's curve, redraw it and grow the node (never shrink it) so the curve fits inside.
function showStep(node, message) {
  const widget = curveWidget(node);
  const element = widget.element;
  element.rewarddancePoints = nextPoints(element.rewarddancePoints, message);
  element.rewarddanceTotal = message.total;
  element.firstChild.textContent = curveLabel(element.rewarddancePoints, message.total);
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
  drawCurve(element.lastChild, element.rewarddancePoints, message.total);
  node.setDirtyCanvas(true, true);
}

// The trainer node a message names (its id as ComfyUI's hidden unique_id writes it).
function trainerNode(id) {
  const nodes = app.graph?.nodes ?? app.graph?._nodes ?? [];
  return nodes.find((n) => String(n.id) === String(id) && n.type === TRAINER);
}

app.registerExtension({
  name: "RewardDance.TrainingCurve",
  async setup() {
    api.addEventListener(EVENT, ({ detail }) => {
      const node = detail && trainerNode(detail.node);
      if (node) showStep(node, detail);
    });
  },
});
