// The service's own logic, free of platform calls, so `npm test` can check it in node.

/** This stage's own work. */
export function transform(text) {
  return text.toUpperCase();
}
