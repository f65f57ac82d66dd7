//! Word splitting after expansion (BuildKit's `wordsStruct`).
//!
//! Whitespace that came from the word itself or from a variable's value splits words; quoted
//! text and escaped chars never do. Quirk kept from BuildKit: an empty quoted string (`""`) makes
//! no word of its own.

#[derive(Debug, Default)]
pub(super) struct Words {
    enabled: bool,
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// A splitter; when `enabled` is false every call is a no-op (callers that only want the
    /// joined expansion pay nothing).
    pub(super) fn new(enabled: bool) -> Self {
        Words {
            enabled,
            ..Words::default()
        }
    }

    pub(super) fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    pub(super) fn add_raw_char(&mut self, ch: char) {
        if self.enabled {
            self.word.push(ch);
            self.in_word = true;
        }
    }

    pub(super) fn add_string(&mut self, s: &str) {
        if self.enabled {
            s.chars().for_each(|c| self.add_char(c));
        }
    }

    pub(super) fn add_raw_string(&mut self, s: &str) {
        if self.enabled {
            self.word.push_str(s);
            self.in_word = true;
        }
    }

    pub(super) fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}
