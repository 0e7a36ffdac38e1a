//! Markdown tables, and numbers as the reports print them.

/// A Markdown table; every cell is escaped so that no text (a prompt, an error) breaks its row: `|` becomes
/// `\|`, newlines and tabs are written as `\n` and `\t`.
pub struct Table {
    out: String,
}

impl Table {
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        let mut t = Self { out: String::new() };
        t.row(headers.iter().map(AsRef::as_ref));
        t.out += &format!("|{}\n", "---|".repeat(headers.len()));
        t
    }

    pub fn row<I: IntoIterator<Item = S>, S: AsRef<str>>(&mut self, cells: I) {
        for c in cells {
            self.out += "| ";
            self.out += &escape(c.as_ref());
            self.out += " ";
        }
        self.out += "|\n";
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', "\\n").replace('\t', "\\t")
}

/// A prompt as code in a cell: in backticks, its own backticks made `'` (a prompt's text may hold any character).
pub fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

/// A fraction as a percentage with two decimals; `–` for none.
pub fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.2}", v * 100.0))
}

/// (mean, std) of fractions as `mean ± std` in percent; `–` for none.
pub fn pm(x: Option<(f64, f64)>) -> String {
    x.map_or("–".into(), |(m, s)| format!("{:.2} ± {:.2}", m * 100.0, s * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_stays_in_one_table_cell() {
        let mut t = Table::new(&["seed", "prompt"]);
        t.row(["0".to_string(), code("a|b`c\n\td")]);
        assert_eq!(t.finish(), "| seed | prompt |\n|---|---|\n| 0 | `a\\|b'c\\n\\td` |\n");
        assert_eq!(
            (pct(Some(0.7626)), pct(None), pm(Some((0.75, 0.025)))),
            ("76.26".into(), "–".into(), "75.00 ± 2.50".into())
        );
    }
}
