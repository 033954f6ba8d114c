//! The XMP packet that says "made by a trained model": IPTC `DigitalSourceType`
//! `trainedAlgorithmicMedia`, plus the model and prompt in IPTC 2025.1's AI properties.
//!
//! The design decision a newcomer will question: the packet is written with `format!` and a
//! ten-line escaper rather than an XML library, because its shape is fixed and only two text
//! values vary; what matters is escaping those, which [`escape`] does (including characters XML
//! cannot carry at all).

use super::Provenance;

/// IPTC's term for "created by a model trained on sampled content", from its digital source type
/// vocabulary (<http://cv.iptc.org/newscodes/digitalsourcetype/>).
pub(crate) const TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";

/// The XMP packet for `provenance`. Seed, steps and sampler stay out of it: IPTC has no properties
/// for them, and the PNG text chunks carry them for reproduction.
pub(crate) fn packet(provenance: &Provenance) -> String {
    format!(
        concat!(
            "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n",
            "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n",
            " <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n",
            "  <rdf:Description rdf:about=\"\"\n",
            "    xmlns:Iptc4xmpExt=\"http://iptc.org/std/Iptc4xmpExt/2008-02-29/\">\n",
            "   <Iptc4xmpExt:DigitalSourceType>{source}</Iptc4xmpExt:DigitalSourceType>\n",
            "   <Iptc4xmpExt:AISystemUsed>{model}</Iptc4xmpExt:AISystemUsed>\n",
            "   <Iptc4xmpExt:AIPromptInformation>{prompt}</Iptc4xmpExt:AIPromptInformation>\n",
            "  </rdf:Description>\n",
            " </rdf:RDF>\n",
            "</x:xmpmeta>\n",
            "<?xpacket end=\"r\"?>",
        ),
        source = TRAINED_ALGORITHMIC_MEDIA,
        model = escape(&provenance.model),
        prompt = escape(&provenance.prompt),
    )
}

/// Escapes `text` for XML element content or attribute values. Characters XML 1.0 cannot carry
/// even as references (most C0 controls, U+FFFE, U+FFFF) become U+FFFD, so a prompt containing
/// them still yields a well-formed packet; CR is written as a reference, which parsers would
/// otherwise turn into LF.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_and_replaces_characters_xml_cannot_carry() {
        assert_eq!(
            escape("a<b>&\"c\"'d'\r\n\t\u{1}\u{ffff}猫"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;&#xD;\n\t\u{fffd}\u{fffd}猫"
        );
    }
}
