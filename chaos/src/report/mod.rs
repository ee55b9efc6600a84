//! The report page of a chaos run (`index.html`): the verdicts, then the fault timeline
//! shaded over operation latency, throughput and the robot's commands, and the histograms
//! of "revoke ack → last command" and "revoke ack → safe-stop", drawn as inline SVG with
//! plotters. Pure: a saved history and summary render the same page anywhere.

use crate::history::{Body, History, Phase};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

mod plots;
#[cfg(test)]
use plots::control_samples;
use plots::{control_histogram, latency_plot, throughput_plot};

/// Why a page could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the report: {0}")]
pub struct ReportError(String);

/// An SVG drawn, or why not.
type Drawn = Result<String, Box<dyn std::error::Error>>;

/// A fault as the plots shade it: what, on which targets, from and to (seconds since the
/// run began).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultBand {
    /// The fault's name (`isolate-leader`, `robot-cut`, …).
    pub fault: String,
    /// What it acted on.
    pub targets: Vec<String>,
    /// Start, seconds.
    pub from_s: f64,
    /// End, seconds (the end of the run when it never healed).
    pub to_s: f64,
}

/// The seconds-since-start axis of a history: its first event is 0.
struct Clock {
    /// The first event, milliseconds.
    t0: f64,
    end_s: f64,
}

impl Clock {
    fn of(history: &History) -> Self {
        let times = history.events.iter().map(|e| e.t_ms);
        let t0 = times.clone().fold(f64::INFINITY, f64::min);
        let t1 = times.fold(f64::NEG_INFINITY, f64::max);
        let t0 = if t0.is_finite() { t0 } else { 0.0 };
        Self {
            t0,
            end_s: ((t1 - t0) / 1000.0).max(1.0),
        }
    }

    fn s(&self, t_ms: f64) -> f64 {
        (t_ms - self.t0) / 1000.0
    }
}

/// The faults of `history`: nemesis start/stop pairs and robot path cuts, in time order.
pub fn fault_bands(history: &History) -> Vec<FaultBand> {
    let clock = Clock::of(history);
    let mut open: BTreeMap<String, (Vec<String>, f64)> = BTreeMap::new();
    let mut bands = Vec::new();
    for e in &history.events {
        let (key, targets, phase) = match &e.body {
            Body::Nemesis {
                fault,
                targets,
                phase,
            } => (fault.clone(), targets.clone(), *phase),
            Body::ControlCut { robot, link, phase } => {
                let link = format!("{link:?}").to_lowercase();
                (
                    format!("{link}-cut"),
                    vec![format!("robot-{robot}")],
                    *phase,
                )
            }
            _ => continue,
        };
        match phase {
            Phase::Start => {
                open.entry(key).or_insert((targets, clock.s(e.t_ms)));
            }
            Phase::Stop => {
                if let Some((targets, from_s)) = open.remove(&key) {
                    let to_s = clock.s(e.t_ms);
                    bands.push(FaultBand {
                        fault: key,
                        targets,
                        from_s,
                        to_s,
                    });
                }
            }
        }
    }
    bands.extend(
        open.into_iter()
            .map(|(fault, (targets, from_s))| FaultBand {
                fault,
                targets,
                from_s,
                to_s: clock.end_s,
            }),
    );
    bands.sort_by(|a, b| a.from_s.total_cmp(&b.from_s));
    bands
}

/// HTML-escapes `text`.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn verdict_rows(verdicts: &Value) -> String {
    let mut rows = String::new();
    for v in verdicts.as_array().into_iter().flatten() {
        let status = v["valid"]["status"].as_str().unwrap_or("?");
        let reason = v["valid"]["reason"].as_str().unwrap_or("");
        let class = match status {
            "valid" => "ok",
            "invalid" => "bad",
            _ => "unknown",
        };
        let counts = v["counts"].as_object().into_iter().flatten();
        let counts: Vec<String> = counts.map(|(k, n)| format!("{k} {n}")).collect();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"{class}\">{} {}</td><td>{}</td></tr>",
            esc(v["checker"].as_str().unwrap_or("?")),
            esc(status),
            esc(reason),
            esc(&counts.join(", "))
        );
        if let Some(example) = v["counterexample"].as_array().filter(|c| !c.is_empty()) {
            let pretty: Vec<String> = example.iter().map(Value::to_string).collect();
            let _ = write!(
                rows,
                "<tr><td></td><td colspan=\"2\"><pre>{}</pre></td></tr>",
                esc(&pretty.join("\n"))
            );
        }
    }
    rows
}

fn fault_rows(bands: &[FaultBand]) -> String {
    let mut rows = String::new();
    for b in bands {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            esc(&b.fault),
            esc(&b.targets.join(", ")),
            b.from_s,
            b.to_s,
            b.to_s - b.from_s
        );
    }
    rows
}

/// The page for one run: `summary` is the run's `summary.json` (scenario, seed, reproduce,
/// outcomes, verdicts, valid); `files` are the report's other files, linked at the foot.
pub fn render(history: &History, summary: &Value, files: &[String]) -> Result<String, ReportError> {
    let clock = Clock::of(history);
    let bands = fault_bands(history);
    let verdicts = &summary["verdicts"];
    let plot = |drawn: Drawn| drawn.map_err(|e| ReportError(e.to_string()));
    let latency = plot(latency_plot(history, &clock, &bands))?;
    let throughput = plot(throughput_plot(history, &clock, &bands))?;
    let histogram = plot(control_histogram(verdicts))?;
    let scenario = summary["scenario"].as_str().unwrap_or("chaos run");
    let valid = summary["valid"].as_bool().unwrap_or(false);
    let outcomes = summary["outcomes"].as_object().into_iter().flatten();
    let outcomes: Vec<String> = outcomes.map(|(k, n)| format!("{k} {n}")).collect();
    let links: Vec<String> = files
        .iter()
        .map(|f| format!("<a href=\"{0}\">{0}</a>", esc(f)))
        .collect();
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tether chaos: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em auto; max-width: 1000px; color: #222 }}
table {{ border-collapse: collapse; margin: .5em 0 }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top }}
.ok {{ color: #1a7f37 }} .bad {{ color: #c00; font-weight: bold }} .unknown {{ color: #a60 }}
pre {{ font-size: 11px; white-space: pre-wrap; max-width: 800px }}
code {{ background: #f4f4f4; padding: 2px 4px }}
</style></head><body>
<h1>{title} — <span class="{class}">{verdict}</span></h1>
<p>Seed {seed}. Operations: {outcomes}. Reproduce with <code>{reproduce}</code>.</p>
<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>counts</th></tr>{verdicts}</table>
<h2>Faults</h2><table><tr><th>fault</th><th>targets</th><th>from s</th><th>to s</th><th>lasted s</th></tr>{faults}</table>
{latency}
{throughput}
{histogram}
<p>Files: {links}</p>
</body></html>
"#,
        title = esc(scenario),
        class = if valid { "ok" } else { "bad" },
        verdict = if valid { "valid" } else { "INVALID" },
        seed = summary["seed"],
        outcomes = esc(&outcomes.join(", ")),
        reproduce = esc(summary["reproduce"].as_str().unwrap_or("")),
        verdicts = verdict_rows(verdicts),
        faults = fault_rows(&bands),
        links = links.join(" · "),
    ))
}

/// An index of several runs (`tether chaos run --scenario all`): one row per run's
/// `summary.json`, linking its page in `<scenario>/index.html`.
pub fn render_index(summaries: &[Value]) -> String {
    let mut rows = String::new();
    for s in summaries {
        let name = s["scenario"].as_str().unwrap_or("?");
        let valid = s["valid"].as_bool().unwrap_or(false);
        let outcomes = s["outcomes"].as_object().into_iter().flatten();
        let outcomes: Vec<String> = outcomes.map(|(k, n)| format!("{k} {n}")).collect();
        let _ = write!(
            rows,
            "<tr><td><a href=\"{0}/index.html\">{0}</a></td><td class=\"{1}\">{2}</td><td>{3}</td></tr>",
            esc(name),
            if valid { "ok" } else { "bad" },
            if valid { "valid" } else { "INVALID" },
            esc(&outcomes.join(", "))
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tether chaos runs</title>
<style>body {{ font-family: sans-serif; margin: 1.5em auto; max-width: 900px }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left }}
.ok {{ color: #1a7f37 }} .bad {{ color: #c00; font-weight: bold }}</style></head><body>
<h1>Tether chaos runs</h1><table><tr><th>scenario</th><th>verdict</th><th>operations</th></tr>{rows}</table>
</body></html>
"#
    )
}

/// The events of `history` a page would shade, for tests.
#[cfg(test)]
fn band_names(history: &History) -> Vec<String> {
    fault_bands(history).into_iter().map(|b| b.fault).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_all, Params};
    use crate::history::{Builder, CutLink, Op, RevokeKind};
    use serde_json::json;

    fn run() -> History {
        let mut b = Builder::new();
        b.call("admin-1", 1, Op::revoke(RevokeKind::Token, "j1"), 0.0)
            .ok(3.0);
        b.nemesis("isolate-leader", &["n1"], Phase::Start, 500.0);
        b.call("admin-1", 1, Op::revoke(RevokeKind::Token, "j2"), 600.0)
            .info(10_600.0);
        b.nemesis("isolate-leader", &["n1"], Phase::Stop, 2_500.0);
        b.control_cut("r1", CutLink::Media, Phase::Start, 3_000.0);
        b.command("r1", "s1", 1, 2_900.0);
        b.safe_stop("r1", "s1", "control_loss", 3_300.0);
        b.build()
    }

    #[test]
    fn faults_pair_their_start_with_their_stop_and_an_unhealed_one_runs_to_the_end() {
        let h = run();
        let bands = fault_bands(&h);
        assert_eq!(band_names(&h), vec!["isolate-leader", "media-cut"]);
        assert_eq!((bands[0].from_s, bands[0].to_s), (0.5, 2.5));
        assert_eq!(
            bands[1].to_s, 10.6,
            "an unhealed cut lasts until the last event"
        );
    }

    #[test]
    fn the_page_shows_the_verdicts_the_faults_and_three_plots() {
        let h = run();
        let verdicts = check_all(&h, &Params::default());
        let summary = json!({
            "scenario": "isolate-leader", "seed": 1, "valid": true,
            "reproduce": "tether chaos run --scenario isolate-leader --seed 1",
            "outcomes": {"ok": 1, "info": 1}, "verdicts": verdicts,
        });
        let page = render(&h, &summary, &["history.jsonl".into()]).expect("a page");
        assert_eq!(
            page.matches("<svg").count(),
            3,
            "latency, throughput, histogram"
        );
        for needle in [
            "isolate-leader",
            "no_lost_revocation",
            "bounded_control",
            "media-cut",
            "href=\"history.jsonl\"",
            "tether chaos run --scenario isolate-leader --seed 1",
        ] {
            assert!(page.contains(needle), "the page lacks {needle}");
        }
    }

    #[test]
    fn a_counterexample_is_shown_escaped() {
        let summary = json!({
            "scenario": "x", "valid": false, "verdicts": [{
                "checker": "no_stale_admission", "valid": {"status": "invalid"},
                "counts": {"stale": 1}, "counterexample": [{"process": "<script>"}],
            }],
        });
        let page = render(&run(), &summary, &[]).expect("a page");
        assert!(page.contains("INVALID") && page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>"));
    }

    #[test]
    fn the_histogram_reads_the_bounded_checkers_samples() {
        let verdicts = json!([{"checker": "bounded_control", "detail": {
            "push": {"samples": {"ack_to_last_command_ms": [0.0, 1.5], "ack_to_safe_stop_ms": [2.0]}},
            "lease": {"samples": {"ack_to_last_command_ms": [900.0], "ack_to_safe_stop_ms": [1001.0]}},
        }}]);
        let s = control_samples(&verdicts);
        assert_eq!(
            s[&("push".into(), "ack_to_last_command_ms".into())],
            vec![0.0, 1.5]
        );
        assert_eq!(
            s[&("lease".into(), "ack_to_safe_stop_ms".into())],
            vec![1001.0]
        );
        let svg = control_histogram(&verdicts).expect("drawn");
        assert!(svg.contains("n = 3") && svg.contains("n = 2"), "{svg}");
    }

    #[test]
    fn an_index_links_every_run() {
        let page = render_index(&[
            json!({"scenario": "kill-all", "valid": true, "outcomes": {"ok": 3}}),
            json!({"scenario": "robot-cut", "valid": false}),
        ]);
        assert!(page.contains("href=\"kill-all/index.html\"") && page.contains("INVALID"));
    }
}
