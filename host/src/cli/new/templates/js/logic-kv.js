// The service's own logic, free of platform calls, so `npm test` can check it in node.

/** The counter a request path names, or undefined for the listing. */
export function keyOf(route) {
  const key = route.replace(/^\/+|\/+$/g, '');
  return key === '' ? undefined : key;
}
