//! Small conversions between JavaScript values and Rust: reading option objects, building
//! plain objects, promises whose settle functions Rust keeps.

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::error::Error;

/// `obj[key]`, or `undefined` when `obj` is not an object.
pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[key]` as a number; `None` when absent, an error when present but not a number.
pub(crate) fn get_f64(obj: &JsValue, key: &str, what: &'static str) -> Result<Option<f64>, Error> {
    let v = get(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_f64().map(Some).ok_or(Error::Argument(what))
}

/// `obj[key]` as an integer within `0..=max`.
pub(crate) fn get_uint(
    obj: &JsValue,
    key: &str,
    max: u32,
    what: &'static str,
) -> Result<Option<u32>, Error> {
    match get_f64(obj, key, what)? {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 && n >= 0.0 && n <= f64::from(max) => Ok(Some(n as u32)),
        Some(_) => Err(Error::Argument(what)),
    }
}

/// `obj[key]` as a boolean (JavaScript truthiness), `None` when absent.
pub(crate) fn get_bool(obj: &JsValue, key: &str) -> Option<bool> {
    let v = get(obj, key);
    (!v.is_undefined() && !v.is_null()).then(|| v.is_truthy())
}

/// `obj[key]` as a string, `None` when absent.
pub(crate) fn get_string(
    obj: &JsValue,
    key: &str,
    what: &'static str,
) -> Result<Option<String>, Error> {
    let v = get(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_string().map(Some).ok_or(Error::Argument(what))
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
