//! Triples from TSV files, interned to dense ids.
//!
//! Ids follow first appearance, so the rows of the written matrices follow the input file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::Path;

use crate::error::{Error, LineProblem};

/// One fact, as ids into the entity and relation vocabularies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Triple {
    pub head: u32,
    pub relation: u32,
    pub tail: u32,
}

/// Names ↔ dense ids, in order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// The id of `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("more than 2^32 names cannot be indexed by u32 ids");
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// Names in id order: line i of `entities.txt` names row i of the matrix.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Forgets every name with an id of `len` or more (those seen only in held-out files).
    pub(crate) fn truncate(&mut self, len: usize) {
        for name in self.names.drain(len..) {
            self.ids.remove(&name);
        }
    }
}

/// Reads `head<TAB>relation<TAB>tail` lines from `path`, interning names into the two vocabularies.
///
/// Blank lines and lines whose first non-blank character is `#` are skipped; fields are trimmed, so Windows
/// line endings and stray spaces around tabs are harmless. A file without triples is an error.
pub fn read_triples(path: &Path, entities: &mut Vocab, relations: &mut Vocab) -> Result<Vec<Triple>, Error> {
    let read_error = |source| Error::Read { path: path.to_owned(), source };
    let reader = BufReader::new(File::open(path).map_err(read_error)?);
    let mut triples = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let malformed = |problem| Error::Malformed { path: path.to_owned(), line: index + 1, problem };
        let line = match line {
            Ok(line) => line,
            Err(error) if error.kind() == ErrorKind::InvalidData => return Err(malformed(LineProblem::NotUtf8)),
            Err(error) => return Err(read_error(error)),
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let [head, relation, tail] = parse_fields(&line).map_err(malformed)?;
        triples.push(Triple {
            head: entities.intern(head),
            relation: relations.intern(relation),
            tail: entities.intern(tail),
        });
    }
    if triples.is_empty() {
        return Err(Error::EmptyGraph { path: path.to_owned() });
    }
    Ok(triples)
}

fn parse_fields(line: &str) -> Result<[&str; 3], LineProblem> {
    let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
    let [head, relation, tail] = fields[..] else {
        return Err(LineProblem::ColumnCount(fields.len()));
    };
    for (field, name) in [(head, "head"), (relation, "relation"), (tail, "tail")] {
        if field.is_empty() {
            return Err(LineProblem::EmptyField(name));
        }
    }
    Ok([head, relation, tail])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A temporary file holding `text` (also what `dataset`'s tests read their graphs from).
    pub(crate) fn file(text: impl AsRef<[u8]>) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_ref()).unwrap();
        file
    }

    fn read(text: &str) -> Result<Vec<Triple>, Error> {
        read_triples(file(text).path(), &mut Vocab::default(), &mut Vocab::default())
    }

    fn problem_at(text: impl AsRef<[u8]>) -> (usize, LineProblem, String) {
        let file = file(text);
        let error = read_triples(file.path(), &mut Vocab::default(), &mut Vocab::default()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&file.path().display().to_string()), "{message}");
        match error {
            Error::Malformed { line, problem, .. } => (line, problem, message),
            other => panic!("expected a malformed-line error, got {other:?}"),
        }
    }

    #[test]
    fn skips_comments_and_blank_lines_and_trims_fields() {
        let triples = read("# a comment\n\na\tr\tb\r\n  # indented comment\nb \t r\t c\n").unwrap();
        assert_eq!(triples.len(), 2);
        assert_eq!(triples[0], Triple { head: 0, relation: 0, tail: 1 });
        assert_eq!(triples[1], Triple { head: 1, relation: 0, tail: 2 });
    }

    #[test]
    fn malformed_lines_name_file_line_and_problem() {
        let (line, problem, message) = problem_at("a\tr\tb\n# fine\nb\tr\n");
        assert_eq!((line, problem), (3, LineProblem::ColumnCount(2)));
        assert!(message.contains(":3: expected 3 tab-separated columns"), "{message}");

        let (line, problem, _) = problem_at("a\tr\tb\tx\n");
        assert_eq!((line, problem), (1, LineProblem::ColumnCount(4)));

        let (line, problem, message) = problem_at("a\tr\tb\na\t \tc\n");
        assert_eq!((line, problem), (2, LineProblem::EmptyField("relation")));
        assert!(message.contains("the relation field is empty"), "{message}");

        let (line, problem, _) = problem_at(b"a\tr\tb\n\xff\tr\tb\n");
        assert_eq!((line, problem), (2, LineProblem::NotUtf8));
    }

    #[test]
    fn an_empty_graph_is_refused() {
        for text in ["", "\n\n", "# only comments\n"] {
            let error = read(text).unwrap_err();
            assert!(matches!(error, Error::EmptyGraph { .. }), "{error:?}");
            assert!(error.to_string().contains("holds no triples"));
        }
    }
}
