// The service's own logic, free of WASI calls, so `npm test` can check it in node.

/** What the service answers to `method path`. */
export function answer(name, method, path) {
  return `hello from ${name}! you asked for ${method} ${path}\n`;
}
