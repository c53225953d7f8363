//! The report: one row per figure (section, name, value, unit, optional baseline and note),
//! printed as it is measured, as a table at the end, and as JSON.

use serde_json::{json, Value};

/// One line of the report.
pub struct Figure {
    section: &'static str,
    name: String,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
    note: String,
}

#[derive(Default)]
pub struct Report(Vec<Figure>);

impl Report {
    pub fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> &mut Figure {
        let figure = Figure {
            section,
            name: name.into(),
            value,
            unit,
            baseline: None,
            note: String::new(),
        };
        println!(
            "  {:<8} {:<52} {:>14.3} {}",
            figure.section, figure.name, figure.value, figure.unit
        );
        self.0.push(figure);
        self.0.last_mut().expect("just pushed")
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|f| {
                    json!({
                        "section": f.section, "name": f.name, "value": f.value, "unit": f.unit,
                        "baseline": f.baseline, "ratio": f.baseline.map(|b| f.value / b), "note": f.note,
                    })
                })
                .collect(),
        )
    }

    pub fn print_table(&self) {
        println!(
            "\n{:<8} {:<52} {:>14} {:<8} {:>14} {:>7}  note",
            "section", "figure", "value", "unit", "baseline", "ratio"
        );
        for f in &self.0 {
            let (baseline, ratio) = match f.baseline {
                Some(b) => (format!("{b:.3}"), format!("{:.3}", f.value / b)),
                None => (String::new(), String::new()),
            };
            println!(
                "{:<8} {:<52} {:>14.3} {:<8} {:>14} {:>7}  {}",
                f.section, f.name, f.value, f.unit, baseline, ratio, f.note
            );
        }
    }
}

impl Figure {
    pub fn baseline(&mut self, baseline: f64) -> &mut Figure {
        self.baseline = Some(baseline);
        self
    }

    pub fn note(&mut self, note: impl Into<String>) -> &mut Figure {
        self.note = note.into();
        self
    }
}
