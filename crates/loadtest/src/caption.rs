//! Captions under the plots: text wrapped to the plot's width and drawn in
//! the strip below it.

use plotters::{coord::Shift, prelude::*};

/// Writes `text`, wrapped, into `area` (the strip under a plot).
pub(crate) fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str) -> anyhow::Result<()> {
    let style = ("sans-serif", 12).into_font().color(&RGBColor(80, 80, 80));
    for (index, line) in wrap(text, 110).iter().enumerate() {
        let y = 4 + 16 * i32::try_from(index).unwrap_or(0);
        area.draw_text(line, &style, (16, y)).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Splits `text` into lines of at most `width` characters, at spaces.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}
