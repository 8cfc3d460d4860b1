// The one number format of RewardDance, as backend/score_text.py's format_score writes it (Python's "{:.4g}"):
// 4 significant digits, trailing zeros dropped, scientific notation below 1e-4 or from 1e4 ("0.8123", "4.34e-05").
// The badge and ranked list of rewarddance.js use it, so they read exactly like the previews and summaries.
export const SIGNIFICANT_DIGITS = 4;

function dropZeros(digits) {
  return digits.includes(".") ? digits.replace(/0+$/, "").replace(/\.$/, "") : digits;
}

export function formatScore(x) {
  const v = Number(x);
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  if (v === 0) return Object.is(v, -0) ? "-0" : "0";
  const [mantissa, exponentText] = v.toExponential(SIGNIFICANT_DIGITS - 1).split("e");
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= SIGNIFICANT_DIGITS) {
    const digits = String(Math.abs(exponent)).padStart(2, "0");
    return `${dropZeros(mantissa)}e${exponent < 0 ? "-" : "+"}${digits}`;
  }
  return dropZeros(v.toFixed(SIGNIFICANT_DIGITS - 1 - exponent));
}

// The 1-based name a person reads for a row ("image 1" is index 0); rows from the backend carry it as `name`.
export function itemName(row) {
  return row.name ?? `item ${Number(row.index) + 1}`;
}
