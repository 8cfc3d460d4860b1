// RewardDance frontend extension: after a run, Score / Best-of-N / Tournament nodes show the best score as a
// badge in their title bar and a compact ranked list under the node. The data comes from the node's UI output
// `rewarddance_scores` ([{index, name, score, rank, kept?, wins?}]: index 0-based like the indices outputs, name
// the 1-based "image 1" a person reads), sent with the "executed" event. Numbers are written by format.js.
import { app } from "../../scripts/app.js";
import { formatScore, itemName } from "./format.js";

const SCORED_NODES = new Set([
  "RewardDanceScoreImages",
  "RewardDanceScoreVideo",
  "RewardDanceCompareToReference",
  "RewardDanceBestOfN",
  "RewardDanceTournament",
]);
const MAX_ROWS = 8;
const ROW_HEIGHT = 16;

function rankedRows(rows) {
  return [...rows].sort((a, b) => a.rank - b.rank);
}

function rowText(row) {
  const wins = row.wins !== undefined ? `  ${row.wins} wins` : "";
  const kept = row.kept ? "  kept" : "";
  return `#${row.rank}  ${itemName(row)}: ${formatScore(row.score)}${wins}${kept}`;
}

function drawBadge(ctx, node, best) {
  const text = `best: ${itemName(best)}  ${formatScore(best.score)}`;
  ctx.save();
  ctx.font = "bold 12px sans-serif";
  const width = ctx.measureText(text).width + 12;
  const x = node.size[0] - width - 6;
  const y = -LiteGraph.NODE_TITLE_HEIGHT + 5;
  ctx.fillStyle = "#1f7a3a";
  ctx.beginPath();
  ctx.roundRect(x, y, width, 20, 6);
  ctx.fill();
  ctx.fillStyle = "#ffffff";
  ctx.fillText(text, x + 6, y + 14);
  ctx.restore();
}

function drawList(ctx, node, rows) {
  const shown = rankedRows(rows).slice(0, MAX_ROWS);
  const more = rows.length - shown.length;
  const lines = shown.map(rowText).concat(more > 0 ? [`... ${more} more`] : []);
  ctx.save();
  ctx.font = "12px monospace";
  const top = node.size[1] + 6;
  ctx.fillStyle = "rgba(0, 0, 0, 0.72)";
  ctx.beginPath();
  ctx.roundRect(0, top, node.size[0], lines.length * ROW_HEIGHT + 8, 6);
  ctx.fill();
  lines.forEach((line, i) => {
    ctx.fillStyle = i === 0 ? "#7ee787" : "#e6edf3";
    ctx.fillText(line, 8, top + 16 + i * ROW_HEIGHT);
  });
  ctx.restore();
}

// Widget values saved by older versions of the pack, and what they are called now (ComfyUI's "default").
const LEGACY_VALUES = {
  RewardDanceModelLoader: { dtype: { auto: "default" }, device: { auto: "default", cuda: "cuda:0" } },
};

function migrateWidgets(node, renames) {
  for (const widget of node.widgets ?? []) {
    const renamed = renames[widget.name]?.[widget.value];
    if (renamed === undefined) continue;
    const options = widget.options?.values ?? [];
    widget.value = options.includes(renamed) ? renamed : "default";
  }
}

app.registerExtension({
  name: "RewardDance.ScoreBadges",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const renames = LEGACY_VALUES[nodeData.name];
    if (renames) {
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        onConfigure?.apply(this, arguments);
        migrateWidgets(this, renames);
      };
    }
    if (!SCORED_NODES.has(nodeData.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const rows = message?.rewarddance_scores;
      this.rewarddanceScores = Array.isArray(rows) && rows.length ? rows : null;
      this.setDirtyCanvas(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      const rows = this.rewarddanceScores;
      if (!rows || this.flags?.collapsed) return;
      drawBadge(ctx, this, rankedRows(rows)[0]);
      drawList(ctx, this, rows);
    };
  },
});
