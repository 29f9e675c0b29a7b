// A small WebGL viewer for glTF binary (.glb) meshes: no library, nothing loaded from elsewhere.
//
//   const view = new GlbView(canvas);   // throws if the browser has no WebGL
//   view.load(arrayBuffer);             // parse and show a .glb (replaces what was shown)
//   view.reset();                       // camera back to the fitted view
//
// The mesh is drawn with a Lambert shader (a light above-left of the eye plus a little ambient,
// both sides lit), the camera fitted to the mesh's bounds; drag to orbit, wheel (or +/-) to zoom,
// arrow keys to orbit, double-click (or Home) to reset. Reads triangle primitives of every
// node of the default scene (node matrices applied), indexed or not; a NORMAL attribute is
// used when present, otherwise flat (per-face) normals are computed.
"use strict";

const GLB_MAGIC = 0x46546c67; // "glTF"
const CHUNK_JSON = 0x4e4f534a;
const CHUNK_BIN = 0x004e4942;
const FOV = Math.PI / 4; // vertical field of view
const COMPONENTS = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT4: 16 };
const ARRAYS = { 5120: Int8Array, 5121: Uint8Array, 5122: Int16Array, 5123: Uint16Array, 5125: Uint32Array, 5126: Float32Array };

class GlbError extends Error {}

// --- parsing ---------------------------------------------------------------------------------

function parseGlb(buffer) {
  if (!(buffer instanceof ArrayBuffer)) buffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const view = new DataView(buffer);
  if (buffer.byteLength < 20 || view.getUint32(0, true) !== GLB_MAGIC) throw new GlbError("not a glTF binary (.glb) file");
  if (view.getUint32(4, true) !== 2) throw new GlbError(`glTF version ${view.getUint32(4, true)} is not supported (2 is)`);
  const length = Math.min(view.getUint32(8, true), buffer.byteLength);
  let json = null;
  let bin = null;
  for (let at = 12; at + 8 <= length;) {
    const size = view.getUint32(at, true);
    const type = view.getUint32(at + 4, true);
    const start = at + 8;
    if (start + size > length) throw new GlbError("truncated .glb chunk");
    if (type === CHUNK_JSON && !json) json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, start, size)));
    else if (type === CHUNK_BIN && !bin) bin = buffer.slice(start, start + size);
    at = start + size + ((4 - (size % 4)) % 4);
  }
  if (!json) throw new GlbError("the .glb file has no JSON chunk");
  return { json, bin };
}

function readAccessor(gltf, bin, index) {
  const acc = gltf.accessors && gltf.accessors[index];
  if (!acc) throw new GlbError(`missing accessor ${index}`);
  const n = COMPONENTS[acc.type];
  const Type = ARRAYS[acc.componentType];
  if (!n || !Type) throw new GlbError(`unsupported accessor type ${acc.type}/${acc.componentType}`);
  const out = new Type(acc.count * n);
  if (acc.bufferView === undefined) return out; // all zeros (sparse accessors are not read)
  const bv = gltf.bufferViews[acc.bufferView];
  if (!bin || (bv.buffer || 0) !== 0) throw new GlbError("accessor data outside the .glb binary chunk");
  const size = Type.BYTES_PER_ELEMENT;
  const stride = bv.byteStride || n * size;
  const base = (bv.byteOffset || 0) + (acc.byteOffset || 0);
  if (base + stride * (acc.count - 1) + n * size > bin.byteLength) throw new GlbError("accessor out of the binary chunk");
  if (stride === n * size && base % size === 0) {
    out.set(new Type(bin, base, acc.count * n));
  } else { // interleaved or unaligned: copy element by element
    const dv = new DataView(bin);
    const name = Type === Float32Array ? "getFloat32" : `get${Type.name.replace("Array", "")}`;
    for (let i = 0; i < acc.count; i++) {
      for (let c = 0; c < n; c++) out[i * n + c] = dv[name](base + i * stride + c * size, true);
    }
  }
  return out;
}

// 4x4 column-major matrices
function mat4Identity() { return [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]; }

function mat4Multiply(a, b) {
  const o = new Array(16);
  for (let c = 0; c < 4; c++) {
    for (let r = 0; r < 4; r++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
      o[c * 4 + r] = s;
    }
  }
  return o;
}

function nodeMatrix(node) {
  if (node.matrix) return node.matrix.slice();
  const [tx, ty, tz] = node.translation || [0, 0, 0];
  const [x, y, z, w] = node.rotation || [0, 0, 0, 1];
  const [sx, sy, sz] = node.scale || [1, 1, 1];
  return [
    (1 - 2 * (y * y + z * z)) * sx, 2 * (x * y + z * w) * sx, 2 * (x * z - y * w) * sx, 0,
    2 * (x * y - z * w) * sy, (1 - 2 * (x * x + z * z)) * sy, 2 * (y * z + x * w) * sy, 0,
    2 * (x * z + y * w) * sz, 2 * (y * z - x * w) * sz, (1 - 2 * (x * x + y * y)) * sz, 0,
    tx, ty, tz, 1,
  ];
}

// The triangles of the GLB, flattened to world space: {positions, normals} (3 floats per
// vertex, 3 vertices per triangle), the bounds, and the triangle count.
function glbTriangles(buffer) {
  const { json: gltf, bin } = parseGlb(buffer);
  const meshes = gltf.meshes || [];
  const parts = [];
  const visit = (index, parent, depth) => {
    const node = (gltf.nodes || [])[index];
    if (!node || depth > 64) return;
    const m = mat4Multiply(parent, nodeMatrix(node));
    if (node.mesh !== undefined && meshes[node.mesh]) parts.push({ mesh: meshes[node.mesh], m });
    for (const child of node.children || []) visit(child, m, depth + 1);
  };
  const scene = (gltf.scenes || [])[gltf.scene || 0];
  if (scene && scene.nodes) scene.nodes.forEach((i) => visit(i, mat4Identity(), 0));
  else if (!gltf.nodes) meshes.forEach((mesh) => parts.push({ mesh, m: mat4Identity() }));

  const chunks = [];
  let total = 0;
  for (const { mesh, m } of parts) {
    for (const prim of mesh.primitives || []) {
      if ((prim.mode ?? 4) !== 4 || prim.attributes.POSITION === undefined) continue; // triangles only
      const pos = readAccessor(gltf, bin, prim.attributes.POSITION);
      const nor = prim.attributes.NORMAL !== undefined ? readAccessor(gltf, bin, prim.attributes.NORMAL) : null;
      let idx = prim.indices !== undefined ? readAccessor(gltf, bin, prim.indices) : null;
      const count = idx ? idx.length - (idx.length % 3) : pos.length / 3 - ((pos.length / 3) % 3);
      if (!idx) { idx = new Uint32Array(count); for (let i = 0; i < count; i++) idx[i] = i; }
      chunks.push({ pos, nor, idx, count, m });
      total += count;
    }
  }
  if (!total) throw new GlbError("the .glb file holds no triangles");

  const positions = new Float32Array(total * 3);
  const normals = new Float32Array(total * 3);
  const min = [Infinity, Infinity, Infinity];
  const max = [-Infinity, -Infinity, -Infinity];
  let o = 0;
  for (const { pos, nor, idx, count, m } of chunks) {
    const nv = pos.length / 3;
    // the normal matrix: inverse transpose of the upper 3x3 (cofactors; the scale does not matter)
    const a = [m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]];
    const nm = [
      a[4] * a[8] - a[5] * a[7], a[5] * a[6] - a[3] * a[8], a[3] * a[7] - a[4] * a[6],
      a[2] * a[7] - a[1] * a[8], a[0] * a[8] - a[2] * a[6], a[1] * a[6] - a[0] * a[7],
      a[1] * a[5] - a[2] * a[4], a[2] * a[3] - a[0] * a[5], a[0] * a[4] - a[1] * a[3],
    ];
    for (let t = 0; t < count; t += 3) {
      for (let k = 0; k < 3; k++) {
        const v = idx[t + k];
        if (v >= nv) throw new GlbError("a triangle index is out of range");
        const x = pos[v * 3], y = pos[v * 3 + 1], z = pos[v * 3 + 2];
        const p = o + k * 3;
        positions[p] = m[0] * x + m[4] * y + m[8] * z + m[12];
        positions[p + 1] = m[1] * x + m[5] * y + m[9] * z + m[13];
        positions[p + 2] = m[2] * x + m[6] * y + m[10] * z + m[14];
        for (let c = 0; c < 3; c++) {
          if (positions[p + c] < min[c]) min[c] = positions[p + c];
          if (positions[p + c] > max[c]) max[c] = positions[p + c];
        }
        if (nor) {
          const nx = nor[v * 3], ny = nor[v * 3 + 1], nz = nor[v * 3 + 2];
          normals[p] = nm[0] * nx + nm[1] * ny + nm[2] * nz;
          normals[p + 1] = nm[3] * nx + nm[4] * ny + nm[5] * nz;
          normals[p + 2] = nm[6] * nx + nm[7] * ny + nm[8] * nz;
        }
      }
      if (!nor) { // flat: the face normal, the same for its three corners
        const ux = positions[o + 3] - positions[o], uy = positions[o + 4] - positions[o + 1], uz = positions[o + 5] - positions[o + 2];
        const vx = positions[o + 6] - positions[o], vy = positions[o + 7] - positions[o + 1], vz = positions[o + 8] - positions[o + 2];
        const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
        for (let k = 0; k < 9; k += 3) { normals[o + k] = nx; normals[o + k + 1] = ny; normals[o + k + 2] = nz; }
      }
      o += 9;
    }
  }
  return { positions, normals, min, max, triangles: total / 3 };
}

// --- drawing ---------------------------------------------------------------------------------

const VERTEX_SHADER = `
attribute vec3 aPosition;
attribute vec3 aNormal;
uniform mat4 uView;
uniform mat4 uProjection;
varying vec3 vNormal;
void main() {
  vNormal = (uView * vec4(aNormal, 0.0)).xyz;  // the view is a rotation and a translation
  gl_Position = uProjection * uView * vec4(aPosition, 1.0);
}`;

const FRAGMENT_SHADER = `
precision mediump float;
uniform vec3 uColor;
varying vec3 vNormal;
void main() {
  vec3 n = normalize(vNormal);
  vec3 l = normalize(vec3(0.35, 0.55, 1.0));  // from above-left of the eye, in view space
  float lambert = abs(dot(n, l));              // both sides lit: open or flipped meshes still read
  gl_FragColor = vec4(uColor * (0.25 + 0.75 * lambert), 1.0);
}`;

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2);
  const nf = 1 / (near - far);
  return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
}

class GlbView {
  constructor(canvas, { color = [0.36, 0.55, 0.85], background = [0, 0, 0, 0] } = {}) {
    const options = { antialias: true, preserveDrawingBuffer: true, premultipliedAlpha: false };
    const gl = canvas.getContext("webgl", options) || canvas.getContext("experimental-webgl", options);
    if (!gl) throw new GlbError("this browser cannot draw WebGL: no 3D view");
    this.canvas = canvas;
    this.gl = gl;
    this.color = color;
    this.background = background;
    this.mesh = null;
    this.draws = 0;
    this.program = this._program();
    this.buffers = { position: gl.createBuffer(), normal: gl.createBuffer() };
    this.reset();
    this._listen();
  }

  _program() {
    const gl = this.gl;
    const shader = (type, source) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, source);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new GlbError(`shader: ${gl.getShaderInfoLog(s)}`);
      return s;
    };
    const p = gl.createProgram();
    gl.attachShader(p, shader(gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(p, shader(gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new GlbError(`shader program: ${gl.getProgramInfoLog(p)}`);
    return {
      id: p,
      aPosition: gl.getAttribLocation(p, "aPosition"),
      aNormal: gl.getAttribLocation(p, "aNormal"),
      uView: gl.getUniformLocation(p, "uView"),
      uProjection: gl.getUniformLocation(p, "uProjection"),
      uColor: gl.getUniformLocation(p, "uColor"),
    };
  }

  // Show the GLB in `buffer` (ArrayBuffer or typed array); returns {triangles, min, max}.
  load(buffer) {
    const mesh = glbTriangles(buffer);
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.position);
    gl.bufferData(gl.ARRAY_BUFFER, mesh.positions, gl.STATIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.normal);
    gl.bufferData(gl.ARRAY_BUFFER, mesh.normals, gl.STATIC_DRAW);
    const centre = mesh.min.map((lo, i) => (lo + mesh.max[i]) / 2);
    const radius = Math.max(1e-6, Math.hypot(...mesh.min.map((lo, i) => mesh.max[i] - lo)) / 2);
    this.mesh = { count: mesh.triangles * 3, centre, radius, min: mesh.min, max: mesh.max, triangles: mesh.triangles };
    this.canvas.dataset.triangles = String(mesh.triangles);
    this.reset();
    return { triangles: mesh.triangles, min: mesh.min, max: mesh.max };
  }

  clear() {
    this.mesh = null;
    delete this.canvas.dataset.triangles;
    this.draw();
  }

  // camera: orbit angles (radians) about the mesh centre; the distance fitted so the bounding
  // box fills the view from these angles (zoom multiplies it)
  reset() {
    this.yaw = -0.4;
    this.pitch = 0.3;
    this.zoom = 1;
    this.distance = this.mesh ? this._fit() : 1;
    this.draw();
  }

  _rotation() {
    const cy = Math.cos(this.yaw), sy = Math.sin(this.yaw), cp = Math.cos(this.pitch), sp = Math.sin(this.pitch);
    // yaw about y, then pitch about x (the camera looks down -z at the centre)
    return [cy, sy * sp, -sy * cp, 0, 0, cp, sp, 0, sy, -cy * sp, cy * cp, 0, 0, 0, 0, 1];
  }

  _aspect() {
    const c = this.canvas;
    return (c.clientWidth && c.clientHeight) ? c.clientWidth / c.clientHeight : c.width / c.height;
  }

  _fit() {
    const { min, max, centre } = this.mesh;
    const r = this._rotation();
    const tanY = Math.tan(FOV / 2);
    const tanX = tanY * this._aspect();
    let d = 0;
    for (let i = 0; i < 8; i++) {
      const p = [i & 1 ? max[0] : min[0], i & 2 ? max[1] : min[1], i & 4 ? max[2] : min[2]].map((v, k) => v - centre[k]);
      const x = r[0] * p[0] + r[4] * p[1] + r[8] * p[2];
      const y = r[1] * p[0] + r[5] * p[1] + r[9] * p[2];
      const z = r[2] * p[0] + r[6] * p[1] + r[10] * p[2];
      d = Math.max(d, z + Math.abs(x) / tanX, z + Math.abs(y) / tanY);
    }
    return Math.max(d * 1.08, this.mesh.radius * 0.1);
  }

  _view() {
    const { centre, radius } = this.mesh;
    const distance = this.distance * this.zoom;
    const t = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, -centre[0], -centre[1], -centre[2], 1];
    const view = mat4Multiply(this._rotation(), t);
    view[14] -= distance;
    return { view, near: Math.max(distance - radius * 1.5, distance * 0.01), far: distance + radius * 1.5 };
  }

  draw() {
    const gl = this.gl;
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr)) || canvas.width;
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr)) || canvas.height;
    if (canvas.clientWidth && (canvas.width !== w || canvas.height !== h)) { canvas.width = w; canvas.height = h; }
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(...this.background);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    this.draws += 1;
    canvas.dataset.draws = String(this.draws);
    if (!this.mesh) return;
    const p = this.program;
    const { view, near, far } = this._view();
    gl.enable(gl.DEPTH_TEST);
    gl.disable(gl.DITHER);
    gl.useProgram(p.id);
    gl.uniformMatrix4fv(p.uView, false, new Float32Array(view));
    gl.uniformMatrix4fv(p.uProjection, false, new Float32Array(perspective(FOV, canvas.width / canvas.height, near, far)));
    gl.uniform3fv(p.uColor, this.color);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.position);
    gl.enableVertexAttribArray(p.aPosition);
    gl.vertexAttribPointer(p.aPosition, 3, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.normal);
    gl.enableVertexAttribArray(p.aNormal);
    gl.vertexAttribPointer(p.aNormal, 3, gl.FLOAT, false, 0, 0);
    gl.drawArrays(gl.TRIANGLES, 0, this.mesh.count);
  }

  _redraw() {
    if (this._frame) return;
    this._frame = requestAnimationFrame(() => { this._frame = 0; this.draw(); });
  }

  orbit(dYaw, dPitch) {
    this.yaw += dYaw;
    this.pitch = Math.max(-1.55, Math.min(1.55, this.pitch + dPitch));
    this._redraw();
  }

  zoomBy(factor) {
    this.zoom = Math.max(0.1, Math.min(10, this.zoom * factor));
    this._redraw();
  }

  _listen() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, id: e.pointerId };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      this.orbit((e.clientX - drag.x) * 0.01, (e.clientY - drag.y) * 0.01);
      drag.x = e.clientX;
      drag.y = e.clientY;
    });
    const end = (e) => { if (drag && e.pointerId === drag.id) drag = null; };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.zoomBy(Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.002))));
    }, { passive: false });
    c.addEventListener("dblclick", () => this.reset());
    c.addEventListener("keydown", (e) => {
      const step = 0.15;
      const keys = {
        ArrowLeft: () => this.orbit(-step, 0), ArrowRight: () => this.orbit(step, 0),
        ArrowUp: () => this.orbit(0, -step), ArrowDown: () => this.orbit(0, step),
        "+": () => this.zoomBy(0.85), "=": () => this.zoomBy(0.85), "-": () => this.zoomBy(1 / 0.85),
        Home: () => this.reset(),
      };
      if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
    });
    if (window.ResizeObserver) new ResizeObserver(() => this._redraw()).observe(c);
  }
}

window.GlbView = GlbView;
window.glbTriangles = glbTriangles;
