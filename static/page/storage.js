// The person's choices kept between visits (localStorage), and nothing when storage is off.

export function remember(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage disabled: nothing to remember with
  }
}

export function recalled(key) {
  try {
    return localStorage.getItem(key) || "";
  } catch {
    return "";
  }
}
