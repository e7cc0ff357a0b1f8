//! Small conversions between JavaScript values and Rust: reading option objects, building
//! plain objects, promises whose settle functions Rust keeps.

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::error::Error;
use crate::prelude::*;

/// `obj[key]`, or `undefined` when `obj` is not an object.
pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// A string (UTF-8), `Uint8Array` or `ArrayBuffer` as bytes.
pub(crate) fn bytes(v: &JsValue, what: &'static str) -> Result<Vec<u8>, Error> {
    if let Some(s) = v.as_string() {
        return Ok(s.into_bytes());
    }
    if let Some(a) = v.dyn_ref::<Uint8Array>() {
        return Ok(a.to_vec());
    }
    if let Some(b) = v.dyn_ref::<js_sys::ArrayBuffer>() {
        return Ok(Uint8Array::new(b).to_vec());
    }
    Err(Error::Argument(what))
}

/// The message of a thrown JavaScript value: an `Error`'s message, or the value if it is a
/// string.
pub(crate) fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

/// Sets `obj[key] = value` on a plain object we created (cannot fail).
pub(crate) fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// An array of numbers.
pub(crate) fn numbers(values: impl IntoIterator<Item = u32>) -> Array {
    values.into_iter().map(JsValue::from).collect()
}

/// The settle functions of a promise Rust created.
#[derive(Debug, Clone)]
pub(crate) struct Settle {
    /// `resolve(value)`.
    pub(crate) resolve: Function,
    /// `reject(error)`.
    pub(crate) reject: Function,
}

/// A new pending promise and its settle functions.
pub(crate) fn promise() -> (Promise, Settle) {
    let mut slot = None;
    let p = Promise::new(&mut |resolve, reject| slot = Some(Settle { resolve, reject }));
    // The executor runs synchronously, so `slot` is always filled; the fallback only keeps
    // this free of panics.
    let settle = slot.unwrap_or_else(|| Settle {
        resolve: JsValue::UNDEFINED.unchecked_into(),
        reject: JsValue::UNDEFINED.unchecked_into(),
    });
    (p, settle)
}
