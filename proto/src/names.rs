//! The closed sets clients and workers name by string: samplers, image formats, request kinds.
//! One enum each, from the HTTP body through the queue to the worker.
//!
//! Hand-written (de)serialisation rather than serde's derive, because the API promises its error
//! wording: an unknown name reads "`heun` is not one of pndm, ddim, …", where the derive would say
//! "unknown variant `heun`, expected one of `pndm`, …". The wire form is the name itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that is not one of the set's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not one of {}", expected.join(", "))]
pub struct UnknownName {
    pub given: String,
    pub expected: &'static [&'static str],
}

macro_rules! named_set {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every member, in the order error messages and help texts list them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Every member's name, in the same order.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];

            /// The name on the wire, in configuration files and on the command line.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(text: &str) -> Result<Self, UnknownName> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName { given: text.to_owned(), expected: Self::NAMES }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

named_set! {
    /// A denoising sampler (the engine's `SamplerKind` says what each computes).
    pub enum Sampler {
        Pndm = "pndm",
        Ddim = "ddim",
        Euler = "euler",
        EulerAncestral = "euler-a",
        DpmSolverMultistep = "dpmpp-2m",
    }
}

impl Sampler {
    /// Whether the sampler has sigmas that Karras et al. (2022) spacing can place; the engine
    /// refuses `karras_sigmas` on the others.
    pub fn has_sigmas(self) -> bool {
        matches!(self, Self::Euler | Self::DpmSolverMultistep)
    }
}

named_set! {
    /// The encoding of a finished image.
    pub enum ImageFormat {
        Png = "png",
        Jpeg = "jpeg",
        Webp = "webp",
    }
}

named_set! {
    /// Which endpoint accepted a request.
    pub enum RequestKind {
        Generation = "generation",
        FashionDesign = "fashion_design",
        CuisineMenu = "cuisine_menu",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for &sampler in Sampler::ALL {
            assert_eq!(sampler.name().parse::<Sampler>().unwrap(), sampler);
            let json = serde_json::to_string(&sampler).unwrap();
            assert_eq!(json, format!("\"{}\"", sampler.name()));
            assert_eq!(serde_json::from_str::<Sampler>(&json).unwrap(), sampler);
        }
        assert_eq!(serde_json::to_string(&ImageFormat::Webp).unwrap(), "\"webp\"");
        assert_eq!(serde_json::to_string(&RequestKind::FashionDesign).unwrap(), "\"fashion_design\"");
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones_in_the_api_s_words() {
        let error = serde_json::from_str::<Sampler>("\"heun\"").unwrap_err().to_string();
        assert!(error.starts_with("`heun` is not one of pndm, ddim, euler, euler-a, dpmpp-2m"), "{error}");
        assert_eq!("gif".parse::<ImageFormat>().unwrap_err().to_string(), "`gif` is not one of png, jpeg, webp");
        let error = serde_json::from_str::<ImageFormat>("5").unwrap_err().to_string();
        assert!(error.starts_with("invalid type: integer `5`, expected a string"), "{error}");
    }

    #[test]
    fn only_euler_and_dpm_solver_have_sigmas_to_space() {
        let with: Vec<_> = Sampler::ALL.iter().filter(|s| s.has_sigmas()).map(|s| s.name()).collect();
        assert_eq!(with, ["euler", "dpmpp-2m"]);
    }
}
