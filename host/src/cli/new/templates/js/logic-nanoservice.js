// The service's own logic, free of platform calls, so `npm test` can check it in node.

/** The greeting for `name`. */
export function greet(greeting, name, path) {
  return `${greeting}, ${name}! you asked for ${path}\n`;
}
