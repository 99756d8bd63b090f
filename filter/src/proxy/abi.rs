//! The host calls a request makes, without the SDK's wrappers: proxy-wasm 0.2.5 `panic!`s (which
//! traps the VM, and with `fail_open: false` fails every stream of the worker) on any status it
//! did not expect, such as the `BadArgument` Envoy answers for a body write in a trailers
//! callback after the body went on. Here every status is an error the lifecycle can handle.

use std::ptr::{null, null_mut};

use proxy_wasm::types::{BufferType, MapType, StreamType};

use crate::wire;

/// A host call that did not succeed: the raw proxy-wasm status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}

/// Takes ownership of what the host allocated (through the SDK's exported allocator).
///
/// # Safety
/// `data` must be null or a `size`-byte allocation made by `proxy_on_memory_allocate`.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

fn status(code: u32) -> Result<(), Failed> {
    if code == OK {
        Ok(())
    } else {
        Err(Failed(code))
    }
}

/// Up to `max` bytes of a buffer; empty when there is none.
pub fn get_buffer(kind: BufferType, max: usize) -> Result<Vec<u8>, Failed> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the out-pointers are valid; the host fills them with its allocation.
    let code = unsafe { proxy_get_buffer_bytes(kind as u32, 0, max, &mut data, &mut size) };
    match code {
        // SAFETY: on success the host handed over `size` bytes at `data` (or null).
        OK => Ok(unsafe { owned(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Failed(other)),
    }
}

/// Replaces the first `size` bytes of a buffer with `data`.
pub fn set_buffer(kind: BufferType, size: usize, data: &[u8]) -> Result<(), Failed> {
    // SAFETY: `data` is a valid slice for the duration of the call.
    status(unsafe { proxy_set_buffer_bytes(kind as u32, 0, size, data.as_ptr(), data.len()) })
}

pub fn get_map(kind: MapType) -> Result<Vec<(String, Vec<u8>)>, Failed> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the out-pointers are valid; the host fills them with its allocation.
    status(unsafe { proxy_get_header_map_pairs(kind as u32, &mut data, &mut size) })?;
    // SAFETY: on success the host handed over `size` bytes at `data` (or null).
    let bytes = unsafe { owned(data, size) };
    wire::decode_map(&bytes).ok_or(Failed(u32::MAX))
}

pub fn get_map_value(kind: MapType, name: &str) -> Result<Option<Vec<u8>>, Failed> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `name` is valid for the call; the out-pointers are valid.
    let code = unsafe {
        proxy_get_header_map_value(kind as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match code {
        // SAFETY: on success the host handed over `size` bytes at `data` (or null).
        OK => Ok((!data.is_null()).then(|| unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(Failed(other)),
    }
}

/// Sets (or with `None` removes) one header.
pub fn set_map_value(kind: MapType, name: &str, value: Option<&str>) -> Result<(), Failed> {
    // SAFETY: `name` and `value` are valid slices for the duration of the call.
    status(unsafe {
        match value {
            Some(value) => proxy_replace_header_map_value(
                kind as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            ),
            None => proxy_remove_header_map_value(kind as u32, name.as_ptr(), name.len()),
        }
    })
}

/// Adds a value to one header, keeping those it has.
pub fn add_map_value(kind: MapType, name: &str, value: &str) -> Result<(), Failed> {
    // SAFETY: `name` and `value` are valid slices for the duration of the call.
    status(unsafe {
        proxy_add_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn send_response(
    status_code: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Failed> {
    let headers = wire::encode_map(headers);
    let (body_data, body_size) = if body.is_empty() {
        (null(), 0)
    } else {
        (body.as_ptr(), body.len())
    };
    // SAFETY: every pointer is a valid slice (or null with size 0) for the call.
    status(unsafe {
        proxy_send_local_response(
            status_code,
            null(),
            0,
            body_data,
            body_size,
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn resume_request() -> Result<(), Failed> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(StreamType::HttpRequest as u32) })
}

/// A property, `None` when the host has none at `path`.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Failed> {
    let path = wire::encode_path(path);
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `path` is valid for the call; the out-pointers are valid.
    let code = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match code {
        // SAFETY: on success the host handed over `size` bytes at `data` (or null).
        OK => Ok(Some(unsafe { owned(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(Failed(other)),
    }
}

/// Sets a property of the current stream: Envoy keeps it as filter state `wasm.<path>`, where
/// access logs (`%FILTER_STATE(wasm.<path>:PLAIN)%`) and CEL read it.
pub fn set_property(path: &str, value: &str) -> Result<(), Failed> {
    // SAFETY: `path` and `value` are valid slices for the duration of the call.
    status(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}
