"""Speech: audio in, timed phones out, then the mouth shapes (visemes) that a face makes while saying them."""
