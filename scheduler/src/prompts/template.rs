//! Sentence templates: `{slot}` placeholders and optional `[...]` fragments, checked against a grammar
//! when the template file is parsed.
//!
//! Design decision: absent keywords are handled by optional fragments that carry their own separators
//! (`[ made of {fabric}]`), not by cleaning up whitespace after rendering, so a template reads naturally
//! for any subset of keywords by construction and the load-time checks can prove it.

use std::marker::PhantomData;
use std::ops::Deref;

use serde::{Deserialize, Deserializer};

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Category,
    Trend,
    Fabric,
    Color,
    Style,
    Dish,
    Keywords,
    /// The rendered sentence, inside a frame.
    Subject,
}

impl Slot {
    const ALL: [Slot; 8] = [
        Slot::Category,
        Slot::Trend,
        Slot::Fabric,
        Slot::Color,
        Slot::Style,
        Slot::Dish,
        Slot::Keywords,
        Slot::Subject,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Slot::Category => "category",
            Slot::Trend => "trend",
            Slot::Fabric => "fabric",
            Slot::Color => "color",
            Slot::Style => "style",
            Slot::Dish => "dish",
            Slot::Keywords => "keywords",
            Slot::Subject => "subject",
        }
    }

    fn from_name(name: &str) -> Option<Slot> {
        Slot::ALL.into_iter().find(|slot| slot.name() == name)
    }
}

/// Which slots a kind of template uses. Each listed slot must appear exactly once.
pub(super) trait Grammar {
    /// Slots the generator always fills; they may stand anywhere.
    const ALWAYS: &'static [Slot];
    /// Slots a request may leave empty; they must sit inside an optional `[...]` fragment.
    const OPTIONAL: &'static [Slot];
}

/// The paper's style prefixes, written as frames around the rendered sentence (`the photo of {subject}`).
#[derive(Debug)]
pub(super) struct Frame;

impl Grammar for Frame {
    const ALWAYS: &'static [Slot] = &[Slot::Subject];
    const OPTIONAL: &'static [Slot] = &[];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Text(String),
    Slot(Slot),
}

/// A parsed template for grammar `G`.
#[derive(Debug)]
pub(super) struct Template<G> {
    /// Rendered in order; a fragment renders only when all its slots have values. Text and slots outside
    /// `[...]` are one-atom fragments.
    fragments: Vec<Vec<Atom>>,
    grammar: PhantomData<G>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum TemplateError {
    #[error("unknown placeholder {{{name}}}; use one of: {known}")]
    UnknownSlot { name: String, known: String },
    #[error("{0}")]
    Syntax(&'static str),
    #[error("uses {{{slot}}} {uses} times; use it exactly once")]
    SlotUses { slot: &'static str, uses: usize },
    #[error("{{{slot}}} may be absent, so it must sit inside an optional [...] fragment")]
    OptionalOutsideFragment { slot: &'static str },
}

impl<G: Grammar> Template<G> {
    pub(super) fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut fragments = Vec::new();
        let mut fragment: Option<Vec<Atom>> = None;
        let mut chars = text.chars();
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '[' if fragment.is_some() => return Err(TemplateError::Syntax("optional fragments do not nest")),
                '[' => {
                    flush(&mut literal, &mut fragments, None);
                    fragment = Some(Vec::new());
                }
                ']' => {
                    let mut atoms = fragment.take().ok_or(TemplateError::Syntax("`]` without `[`"))?;
                    flush(&mut literal, &mut fragments, Some(&mut atoms));
                    if !atoms.iter().any(|atom| matches!(atom, Atom::Slot(_))) {
                        return Err(TemplateError::Syntax("optional fragment without a placeholder"));
                    }
                    fragments.push(atoms);
                }
                '{' => {
                    let rest = chars.as_str();
                    let end = rest.find('}').ok_or(TemplateError::Syntax("`{` without `}`"))?;
                    chars = rest[end + 1..].chars();
                    let slot = slot::<G>(&rest[..end])?;
                    flush(&mut literal, &mut fragments, fragment.as_mut());
                    match fragment.as_mut() {
                        Some(atoms) => atoms.push(Atom::Slot(slot)),
                        None if G::OPTIONAL.contains(&slot) => {
                            return Err(TemplateError::OptionalOutsideFragment { slot: slot.name() })
                        }
                        None => fragments.push(vec![Atom::Slot(slot)]),
                    }
                }
                '}' => return Err(TemplateError::Syntax("`}` without `{`")),
                c => literal.push(c),
            }
        }
        if fragment.is_some() {
            return Err(TemplateError::Syntax("`[` without `]`"));
        }
        flush(&mut literal, &mut fragments, None);
        check_slot_uses::<G>(&fragments)?;
        Ok(Template { fragments, grammar: PhantomData })
    }

    /// Renders with `value` giving each slot's value, or `None` to leave out the fragments using it.
    pub(super) fn render<'a>(&self, value: impl Fn(Slot) -> Option<&'a str>) -> String {
        let mut out = String::new();
        for atoms in &self.fragments {
            let rendered: Option<Vec<&str>> = atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Text(text) => Some(text.as_str()),
                    Atom::Slot(slot) => value(*slot),
                })
                .collect();
            out.extend(rendered.into_iter().flatten());
        }
        out
    }
}

impl Template<Frame> {
    /// The rendered sentence `subject` inside this frame.
    pub(super) fn wrap(&self, subject: &str) -> String {
        self.render(|slot| (slot == Slot::Subject).then_some(subject))
    }
}

impl<'de, G: Grammar> Deserialize<'de> for Template<G> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(|error| serde::de::Error::custom(format!("template {text:?}: {error}")))
    }
}

/// Moves pending literal text into the open fragment, or into a fragment of its own at top level.
fn flush(literal: &mut String, fragments: &mut Vec<Vec<Atom>>, open: Option<&mut Vec<Atom>>) {
    if literal.is_empty() {
        return;
    }
    let text = Atom::Text(std::mem::take(literal));
    match open {
        Some(atoms) => atoms.push(text),
        None => fragments.push(vec![text]),
    }
}

/// The slot named `name`, if grammar `G` uses it.
fn slot<G: Grammar>(name: &str) -> Result<Slot, TemplateError> {
    let used = |slot: &Slot| G::ALWAYS.contains(slot) || G::OPTIONAL.contains(slot);
    Slot::from_name(name).filter(used).ok_or_else(|| TemplateError::UnknownSlot {
        name: name.to_owned(),
        known: G::ALWAYS
            .iter()
            .chain(G::OPTIONAL)
            .map(|slot| format!("{{{}}}", slot.name()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn check_slot_uses<G: Grammar>(fragments: &[Vec<Atom>]) -> Result<(), TemplateError> {
    for &slot in G::ALWAYS.iter().chain(G::OPTIONAL) {
        match fragments.iter().flatten().filter(|atom| **atom == Atom::Slot(slot)).count() {
            1 => {}
            uses => return Err(TemplateError::SlotUses { slot: slot.name(), uses }),
        }
    }
    Ok(())
}

/// A list from a template file that must have at least one entry.
#[derive(Debug)]
pub(super) struct NonEmpty<T>(Vec<T>);

impl<T> Deref for NonEmpty<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(deserializer)?;
        if items.is_empty() {
            return Err(serde::de::Error::custom("empty list; give at least one template"));
        }
        Ok(NonEmpty(items))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Debug)]
    struct Menu;

    impl Grammar for Menu {
        const ALWAYS: &'static [Slot] = &[Slot::Dish];
        const OPTIONAL: &'static [Slot] = &[Slot::Keywords];
    }

    fn parse(text: &str) -> Result<Template<Menu>, TemplateError> {
        Template::parse(text)
    }

    #[test]
    fn optional_fragments_render_only_with_their_slot() {
        let template = parse("a plate of {dish}[ with {keywords}], served").unwrap();
        let render = |keywords| template.render(|slot| if slot == Slot::Dish { Some("{dish}") } else { keywords });
        assert_eq!(render(None), "a plate of {dish}, served");
        assert_eq!(render(Some("rice")), "a plate of {dish} with rice, served");
    }

    #[test]
    fn malformed_templates_are_rejected_with_the_reason() {
        let cases = [
            ("{dish}[ {fabric}]", "unknown placeholder {fabric}; use one of: {dish}, {keywords}"),
            ("{dishes}[ {keywords}]", "unknown placeholder {dishes}"),
            ("{dish[ {keywords}]", "unknown placeholder {dish[ {keywords}"),
            ("{dish}[ {keywords}", "`[` without `]`"),
            ("{dish}[ {keywords}]]", "`]` without `[`"),
            ("{dish}} [{keywords}]", "`}` without `{`"),
            ("{dish} [{keywords", "`{` without `}`"),
            ("{dish}[[ {keywords}]]", "optional fragments do not nest"),
            ("{dish}[ tasty][ {keywords}]", "optional fragment without a placeholder"),
            ("{dish} {keywords}", "{keywords} may be absent, so it must sit inside an optional [...] fragment"),
            ("{dish} and {dish}[ {keywords}]", "uses {dish} 2 times; use it exactly once"),
            ("a dish[ {keywords}]", "uses {dish} 0 times; use it exactly once"),
        ];
        for (text, reason) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.starts_with(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn an_empty_template_list_is_rejected() {
        let error = toml::from_str::<HashMap<String, NonEmpty<Template<Menu>>>>("sentences = []").unwrap_err();
        assert!(error.to_string().contains("give at least one template"), "{error}");
    }
}
