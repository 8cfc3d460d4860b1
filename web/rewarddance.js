// RewardDance frontend extension: after a run, Score / Best-of-N / Tournament nodes show the best score as a
// badge in their title bar and a compact ranked list inside the node, as a DOM widget (the node grows to fit it, so
// nothing is drawn over its neighbours, and ComfyUI's Vue "Nodes 2.0" view shows the same widget). The classic
// canvas draws the badge inside the title bar itself; the Vue view shows it among the header's node badges. The data comes
// from the node's UI output `rewarddance_scores` ([{index, name, score, rank, kept?, wins?}]: index 0-based like the
// indices outputs, name the 1-based "image 1" a person reads), sent with the "executed" event. Numbers are written
// by format.js.
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

function badgeText(best) {
  return `best: ${itemName(best)}  ${formatScore(best.score)}`;
}

function drawBadge(ctx, node, best) {
  const text = badgeText(best);
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

// The Vue view's header badge: a node badge (ComfyUI's LGraphBadge) with text only in that view, since the classic
// canvas would draw node badges above the title bar, outside the node (there the title-bar badge above is drawn).
function headerBadge(node) {
  const rows = node.rewarddanceScores;
  const shown = LiteGraph.vueNodesMode && rows && !node.flags?.collapsed;
  return new LGraphBadge({
    text: shown ? badgeText(rankedRows(rows)[0]) : "",
    fgColor: "#ffffff",
    bgColor: "#1f7a3a",
  });
}

// Ask the Vue view to read the node's badges again (it re-reads a node's data when its slots change).
function refreshVueNode(node) {
  if (LiteGraph.vueNodesMode) node.graph?.trigger("node:slot-errors:changed", { nodeId: node.id });
}

const RANKING_WIDGET = "rewarddance_ranking";
const WIDGET_MARGIN = 4;

// The lines of the ranked list: the best first (the badge's text), then up to MAX_ROWS rows and how many more.
function rankingLines(rows) {
  const ranked = rankedRows(rows);
  const shown = ranked.slice(0, MAX_ROWS);
  const more = rows.length - shown.length;
  return [badgeText(ranked[0])].concat(shown.map(rowText), more > 0 ? [`... ${more} more`] : []);
}

// The height the list's lines take inside the widget (4 px padding above and below, the widget's margin around).
function listHeight(element) {
  return element.childElementCount * ROW_HEIGHT + 8 + 2 * WIDGET_MARGIN;
}

// The node's ranking widget, added on its first run; not saved with the workflow nor sent to the backend.
function rankingWidget(node) {
  const existing = node.widgets?.find((w) => w.name === RANKING_WIDGET);
  if (existing) return existing;
  const element = document.createElement("div");
  element.className = "rewarddance-ranking";
  element.style.cssText =
    "font: 12px monospace; line-height: " + ROW_HEIGHT + "px; padding: 4px 8px; box-sizing: border-box;" +
    "background: rgba(0, 0, 0, 0.72); color: #e6edf3; border-radius: 6px; white-space: pre; overflow: hidden;";
  const widget = node.addDOMWidget(RANKING_WIDGET, "rewarddance_ranking", element, {
    serialize: false,
    hideOnZoom: false,
    margin: WIDGET_MARGIN,
    getMinHeight: () => listHeight(element),
    getMaxHeight: () => listHeight(element),
  });
  widget.serialize = false;
  return widget;
}

// Write the ranked list into the node's widget and grow the node (never shrink it) so the list fits inside.
function showRanking(node, rows) {
  const widget = rankingWidget(node);
  widget.element.replaceChildren(
    ...rankingLines(rows).map((line, i) => {
      const div = document.createElement("div");
      div.textContent = line;
      if (i === 0) div.style.color = "#7ee787";
      return div;
    })
  );
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
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

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      if (typeof LGraphBadge === "function") this.badges?.push(() => headerBadge(this)); // frontends with node badges
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const rows = message?.rewarddance_scores;
      this.rewarddanceScores = Array.isArray(rows) && rows.length ? rows : null;
      if (this.rewarddanceScores) showRanking(this, this.rewarddanceScores);
      refreshVueNode(this);
      this.setDirtyCanvas(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      const rows = this.rewarddanceScores;
      if (!rows || this.flags?.collapsed) return;
      drawBadge(ctx, this, rankedRows(rows)[0]);
    };
  },
});
