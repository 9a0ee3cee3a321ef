//! Masking secret values wherever output could carry them: task logs, attach sessions, a task's
//! status reason, a plugin's messages about settings it was given.
//!
//! Owns the replacement text and the matching rules. Must not know where values come from
//! (interpolation resolves them) nor where output goes.

/// What a masked value is replaced with.
pub const MASK: &str = "********";

/// Values never shown as they are, longest first (so a value containing another is masked
/// whole). A value is matched within a line: one containing a newline is masked line by line.
#[derive(Clone, Default)]
pub struct Masks {
    values: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values: they are secrets.
        f.debug_struct("Masks")
            .field("values", &self.values.len())
            .finish()
    }
}

impl Masks {
    /// Masks for these values (empty ones are ignored).
    pub fn of(values: impl IntoIterator<Item = String>) -> Self {
        let mut masks = Self::default();
        masks.add(values);
        masks
    }

    /// From now on, these values are masked too.
    pub fn add(&mut self, values: impl IntoIterator<Item = String>) {
        for value in values {
            for line in value.split('\n').map(|line| line.trim_end_matches('\r')) {
                if !line.is_empty() && !self.values.iter().any(|known| known == line.as_bytes()) {
                    self.values.push(line.as_bytes().to_vec());
                }
            }
        }
        self.values
            .sort_by_key(|value| std::cmp::Reverse(value.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `bytes` with every occurrence of each value replaced by [`MASK`].
    pub fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        'scan: while at < bytes.len() {
            for value in &self.values {
                if bytes[at..].starts_with(value) {
                    out.extend_from_slice(MASK.as_bytes());
                    at += value.len();
                    continue 'scan;
                }
            }
            out.push(bytes[at]);
            at += 1;
        }
        out
    }

    /// `text` with every value masked.
    pub fn text(&self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.apply(text.as_bytes())).into_owned()
    }

    /// How many bytes at the end of `bytes` could be the start of a value (to hold back when
    /// output arrives in pieces, so a value split between two pieces is still masked).
    pub fn partial_suffix(&self, bytes: &[u8]) -> usize {
        let longest = self.values.first().map_or(0, Vec::len);
        let window = longest.saturating_sub(1).min(bytes.len());
        (1..=window)
            .rev()
            .find(|&length| {
                let tail = &bytes[bytes.len() - length..];
                self.values.iter().any(|value| value.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_longest_first_and_line_by_line() {
        let masks = Masks::of([
            "hunter2".to_string(),
            "hunter22".to_string(),
            "multi\r\nline".to_string(),
            String::new(),
        ]);
        assert_eq!(
            masks.text("a hunter22 b hunter2 multi line"),
            "a ******** b ******** ******** ********"
        );
        assert_eq!(Masks::default().text("hunter2"), "hunter2");
        assert!(format!("{masks:?}").contains('4') && !format!("{masks:?}").contains("hunter"));
    }

    #[test]
    fn the_start_of_a_value_at_the_end_is_held_back() {
        let masks = Masks::of(["hunter2".to_string()]);
        assert_eq!(masks.partial_suffix(b"token=hunt"), 4);
        assert_eq!(masks.partial_suffix(b"token=x"), 0);
        assert_eq!(masks.partial_suffix(b"h"), 1);
        assert_eq!(Masks::default().partial_suffix(b"abc"), 0);
    }
}
